"""Atomic file output: every file or directory appears complete or not at all.

Writers create a temporary sibling (same filesystem), fsync it, then ``os.replace`` it
onto the final name, so a crash never leaves a half-written output that looks complete.

A temporary sibling's name carries the writing process's id (``.<name>.tmp-<pid>-XXXX``). A process killed with
SIGKILL cannot remove its own, so the next writer of the same output removes every sibling whose process is gone
(``sweep_stale``): a crash leaves nothing behind after the rerun.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .faults import fault_point

log = logging.getLogger(__name__)

__all__ = [
    "atomic_path",
    "atomic_dir",
    "publish_seed_dirs",
    "write_bytes",
    "write_text",
    "write_json",
    "read_json",
    "sha256_bytes",
    "sha256_file",
    "sweep_stale",
]

_STALE = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by writers that no longer run (killed mid-write); return them.

    A writer of :func:`atomic_dir` killed between moving the previous output aside and renaming the new one into
    place leaves only the previous one (``.<name>.old-<pid>-``): it is put back, so a good output is never lost."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    prefix = f".{path.name}."
    for p in path.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        m = _STALE.match(p.name)
        if m is None or m["name"] != path.name or _pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not (path.exists() or path.is_symlink()):
            os.replace(p, path)
            log.warning("restored %s from %s (a write of it was interrupted)", path, p.name)
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write of %s: %s", len(removed), path,
                 ", ".join(p.name for p in removed))
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success rename it onto ``path``.

    Use for writers that want a file name (torch.save, pyarrow, PIL.Image.save):

        with atomic_path("out.parquet") as tmp:
            pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=suffix or path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fault_point(f"write:{path.name}")
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``path`` as a whole.

    The old directory (if any) is removed only after the new one is fully written, and the
    new one appears under its final name by a single rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        fault_point(f"write_dir:{path.name}")
        old = None
        if path.exists() or path.is_symlink():
            old = path.parent / f".{path.name}.old-{os.getpid()}-"
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None and not (path.exists() or path.is_symlink()):
                os.replace(old, path)  # the previous good output goes back where it was
            raise
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def publish_seed_dirs(work: str | os.PathLike, out: str | os.PathLike, seeds: Iterable[int],
                      files: Iterable[str]) -> Path:
    """Copy ``files`` of every ``work/seed-<s>/`` (a stage's resumable work folder) into ``out/seed-<s>/``; ``out``
    appears complete in one rename (:func:`atomic_dir`). The work folder is left for the caller to remove."""
    work, files = Path(work), tuple(files)
    with atomic_dir(out) as tmp:
        for seed in seeds:
            (tmp / f"seed-{seed}").mkdir()
            for f in files:
                shutil.copy2(work / f"seed-{seed}" / f, tmp / f"seed-{seed}" / f)
    return Path(out)

def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
