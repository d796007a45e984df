"""The caption stage's work: a prepared dataset -> ``captions.parquet``, resumable, with pluggable backends.

Output columns: ``key`` (the prepared sample key, the join key everywhere), ``split``, ``caption``, ``captioner``
(e.g. ``transformers:Salesforce/blip2-opt-2.7b``), ``settings`` (JSON of the generation settings). Rows follow the
prepared dataset's order. The file appears only when every key is captioned (atomic rename).

Fallback (``caption.fallback: sentence``, the default): samples no captioner can caption here (the ``dataset``
backend on a dataset without captions, such as an image folder or ``digits``; a model backend whose weights or
environment are missing) get an empty caption, so their caption level is the sentence level (genvpt/texts.py
replaces empty captions with ``caption.sentence_template``). Their ``captioner`` column says
``FALLBACK_CAPTIONER``, the file's metadata ``genvpt.fallback`` records how many and why, and the report says so
(:func:`caption_note`). ``fallback: error`` makes the stage fail instead.

Resumption: while running, finished captions go to ``<name>.partial/`` next to the output (``meta.json`` + one
``part-NNNNNN.parquet`` per ``flush_every`` captions, each written atomically). A rerun with the same captioner,
settings and prepared dataset reads the parts and captions only the keys still missing; different settings or
data discard the partial folder (with a warning). The folder is removed once the final file is written.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Protocol, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..io import atomic_path, read_json, sha256_file, write_json
from .params import CaptionParams

log = logging.getLogger(__name__)

__all__ = [
    "CaptionError",
    "CaptionerUnavailable",
    "MissingWeightsError",
    "FALLBACK_CAPTIONER",
    "caption_record",
    "caption_note",
    "CAPTIONS_SCHEMA",
    "Backend",
    "BACKENDS",
    "register_backend",
    "list_samples",
    "caption_dataset",
    "read_captions",
    "partial_dir_for",
]

CAPTIONS_SCHEMA = pa.schema(
    [("key", pa.string()), ("split", pa.string()), ("caption", pa.string()), ("captioner", pa.string()), ("settings", pa.string())]
)


class CaptionError(RuntimeError):
    """The caption stage cannot go on; the message says why and what to do."""


class CaptionerUnavailable(CaptionError):
    """The configured captioner cannot run on this machine (weights, environment); with ``caption.fallback:
    sentence`` the samples it did not caption fall back to the sentence level."""


class MissingWeightsError(CaptionerUnavailable):
    """The captioning model's weights are not where params say; the message names the path/id tried and how to provide them."""


FALLBACK_CAPTIONER = "none (sentence level)"  # the captioner column of samples that fell back


Sink = Callable[[list[tuple[str, str]]], None]


@dataclass(frozen=True)
class Sample:
    key: str
    split: str
    caption: Optional[str]  # the dataset's own caption, if any


class Backend(Protocol):
    """A captioner: ``captioner`` id and ``settings`` are written with every caption; ``caption`` captions the given
    samples of a prepared dataset (any order, any batch size) and hands finished ``(key, caption)`` pairs to ``sink``
    as soon as it has them, so that a crash loses at most the captions not yet handed over."""

    captioner: str
    settings: dict

    def caption(self, prepared_dir: Path, todo: Sequence[Sample], sink: Sink) -> None: ...


BACKENDS: dict[str, Callable[[CaptionParams], Backend]] = {}


def register_backend(name: str, factory: Callable[[CaptionParams], Backend]) -> None:
    BACKENDS[name] = factory


def _builtin_backends() -> None:
    if BACKENDS:
        return
    from .dataset_backend import DatasetCaptions
    from .hf_blip2 import TransformersBlip2
    from .lavis_backend import LavisBlip2

    register_backend("dataset", DatasetCaptions)
    register_backend("transformers", TransformersBlip2)
    register_backend("lavis", LavisBlip2)


def make_backend(params: CaptionParams) -> Backend:
    _builtin_backends()
    if params.backend not in BACKENDS:
        raise CaptionError(f"unknown caption backend {params.backend!r}; registered: {sorted(BACKENDS)}")
    return BACKENDS[params.backend](params)


# ---------------------------------------------------------------------------------------------------------------
def list_samples(prepared_dir: str | os.PathLike, splits: Sequence[str]) -> list[Sample]:
    """All samples of the given splits, in the prepared order (from manifest.parquet, else from the shards)."""
    prepared = Path(prepared_dir)
    manifest = prepared / "manifest.parquet"
    out: list[Sample] = []
    if manifest.is_file():
        t = pq.read_table(manifest, columns=["key", "split", "caption"]).to_pydict()
        by_split: dict[str, list[Sample]] = {s: [] for s in splits}
        for k, s, c in zip(t["key"], t["split"], t["caption"]):
            if s in by_split:
                by_split[s].append(Sample(k, s, c))
        for s in splits:
            if not by_split[s]:
                raise CaptionError(f"{manifest}: split {s!r} has no samples (splits there: {sorted(set(t['split']))})")
            out.extend(by_split[s])
    else:
        from ..datasets.shards import iter_split

        for s in splits:
            out.extend(Sample(r["key"], s, r["caption"]) for r in iter_split(prepared, s, decode=False))
    keys = [x.key for x in out]
    if len(set(keys)) != len(keys):
        raise CaptionError(f"{prepared}: sample keys are not unique across splits {list(splits)}")
    return out


def _data_fingerprint(prepared_dir: Path, samples: Sequence[Sample]) -> str:
    manifest = prepared_dir / "manifest.parquet"
    if manifest.is_file():
        return sha256_file(manifest)
    import hashlib

    return hashlib.sha256("\n".join(s.key for s in samples).encode()).hexdigest()


def partial_dir_for(out_path: str | os.PathLike) -> Path:
    out = Path(out_path)
    return out.with_name(out.name.removesuffix(".parquet") + ".partial")


class PartialStore:
    """Finished captions of an unfinished run: ``<out>.partial/meta.json`` + atomically written parquet parts."""

    def __init__(self, out_path: Path, flush_every: int):
        self.dir = partial_dir_for(out_path)
        self.flush_every = max(1, int(flush_every))
        self.buffer: list[tuple[str, str]] = []
        self.done: dict[str, str] = {}
        self._next = 0

    def open(self, meta: dict) -> dict[str, str]:
        """Load matching earlier progress (discarding mismatching progress); return key -> caption already done."""
        meta_path = self.dir / "meta.json"
        if self.dir.exists():
            old = None
            try:
                old = read_json(meta_path)
            except (FileNotFoundError, ValueError):
                pass
            if old != meta:
                log.warning("discarding %s: it was made with other settings or data (%s)", self.dir, old)
                shutil.rmtree(self.dir)
        if not self.dir.exists():
            self.dir.mkdir(parents=True)
            write_json(meta_path, meta)
            return {}
        parts = sorted(self.dir.glob("part-*.parquet"))
        for p in parts:
            try:
                t = pq.read_table(p, columns=["key", "caption"]).to_pydict()
            except Exception as err:  # a part is written atomically, so this is outside damage
                raise CaptionError(f"unreadable partial captions file {p} ({err}); delete {self.dir} to start over") from err
            self.done.update(zip(t["key"], t["caption"]))
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=-1)
        if self.done:
            log.info("resuming: %d captions already in %s", len(self.done), self.dir)
        return dict(self.done)

    def add(self, rows: Iterable[tuple[str, str]]) -> None:
        self.buffer.extend(rows)
        if len(self.buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        keys, caps = zip(*self.buffer)
        table = pa.table({"key": list(keys), "caption": list(caps)})
        with atomic_path(self.dir / f"part-{self._next:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self._next += 1
        self.done.update(self.buffer)
        self.buffer = []

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
def caption_dataset(
    prepared_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    params: CaptionParams | None = None,
    *,
    backend: Backend | None = None,
) -> dict:
    """Caption every sample of ``params.splits`` of a prepared dataset into ``out_path`` (parquet). Returns stats."""
    params = params or CaptionParams()
    prepared = Path(prepared_dir)
    out = Path(out_path)
    backend = backend or make_backend(params)
    samples = list_samples(prepared, params.splits)
    meta = {
        "captioner": backend.captioner,
        "settings": backend.settings,
        "data": _data_fingerprint(prepared, samples),
        "splits": list(params.splits),
    }
    store = PartialStore(out, params.flush_every)
    done = store.open(meta)
    wanted = {s.key for s in samples}
    todo = [s for s in samples if s.key not in done]
    log.info("%s: %d samples, %d already captioned, %d to caption with %s", prepared, len(samples), len(samples) - len(todo), len(todo), backend.captioner)

    def sink(rows: list[tuple[str, str]]) -> None:
        bad = [k for k, _ in rows if k not in wanted]
        if bad:
            raise CaptionError(f"backend {backend.captioner} returned captions for unknown keys {bad[:5]}")
        store.add((k, "" if c is None else str(c)) for k, c in rows)

    unavailable = None
    if todo:
        try:
            backend.caption(prepared, todo, sink)
        except CaptionerUnavailable as err:
            if params.fallback != "sentence":
                raise
            unavailable = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("captioner %s cannot run here (%s): the samples it has not captioned use the sentence level "
                        "(caption.fallback: sentence)", backend.captioner, unavailable)
        finally:
            store.flush()  # whatever finished survives a crash
    captions = store.done
    missing = [s.key for s in samples if s.key not in captions]
    no_caption = set(getattr(backend, "no_caption", ()))  # samples the backend has nothing for (dataset backend)
    fallback = [k for k in missing if unavailable is not None or k in no_caption]
    missing = [k for k in missing if k not in set(fallback)]
    if missing:
        raise CaptionError(f"backend {backend.captioner} left {len(missing)} keys without a caption (e.g. {missing[:5]}); "
                           f"progress is kept in {store.dir}, rerun to continue")
    reason = unavailable and f"{backend.captioner} cannot run here: {unavailable}"
    if fallback and reason is None:
        reason = f"the dataset has no caption for {len(fallback)} samples and caption.backend is {params.backend}"
    if fallback:
        log.warning("%d of %d samples have no caption: their caption level is the sentence level (%s)",
                    len(fallback), len(samples), reason)
    fell_back = set(fallback)
    empty = sum(1 for s in samples if s.key not in fell_back and not captions[s.key].strip())
    if empty:
        log.warning("%d of %d captions are empty", empty, len(samples))
    settings = json.dumps(backend.settings, sort_keys=True)
    file_meta = {"genvpt.captioner": backend.captioner, "genvpt.settings": settings, "genvpt.prepared": str(prepared)}
    if fallback:  # only then: a dataset with captions gives the same bytes as before fallbacks existed
        file_meta["genvpt.fallback"] = json.dumps({"level": "sentence", "samples": len(fallback), "of": len(samples),
                                              "reason": reason}, sort_keys=True)
    table = pa.table(
        {
            "key": [s.key for s in samples],
            "split": [s.split for s in samples],
            "caption": ["" if s.key in fell_back else captions[s.key] for s in samples],
            "captioner": [FALLBACK_CAPTIONER if s.key in fell_back else backend.captioner for s in samples],
            "settings": ["{}" if s.key in fell_back else settings for s in samples],
        },
        schema=CAPTIONS_SCHEMA.with_metadata(file_meta),
    )
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    store.remove()
    stats = {"captions": len(samples), "captioned_now": len(todo) - len(fallback), "resumed": len(samples) - len(todo),
             "empty": empty, "captioner": backend.captioner, "settings": backend.settings,
             "fallback": len(fallback), "fallback_reason": reason}
    log.info("wrote %s: %s", out, stats)
    return stats


def read_captions(path: str | os.PathLike) -> dict[str, str]:
    """key -> caption from a captions.parquet."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the caption stage (`python -m stages.caption`) first")
    try:
        t = pq.read_table(path, columns=["key", "caption"]).to_pydict()
    except Exception as err:
        raise CaptionError(f"{path} is not a captions.parquet with key/caption columns: {err}") from err
    return dict(zip(t["key"], t["caption"]))


def caption_record(path: str | os.PathLike) -> dict:
    """What a captions.parquet records about how it was made: ``captioner``, ``captions`` (rows) and ``fallback``
    (``{"level", "samples", "of", "reason"}`` when samples fell back to the sentence level, else None)."""
    meta = pq.read_schema(path).metadata or {}
    fb = meta.get(b"genvpt.fallback")
    return {"captioner": meta.get(b"genvpt.captioner", b"?").decode(), "captions": pq.read_metadata(path).num_rows,
            "fallback": json.loads(fb) if fb else None}


def caption_note(path: str | os.PathLike | None) -> Optional[str]:
    """One sentence for the report on where the caption level of the multi-level texts came from; None without a
    readable captions file."""
    if path is None or not Path(path).is_file():
        return None
    try:
        rec = caption_record(path)
    except Exception as err:  # the report renders without the note
        log.warning("no caption note: %s unreadable (%s)", path, err)
        return None
    fb = rec["fallback"]
    who = "the dataset's own" if rec["captioner"] == "dataset" else rec["captioner"]
    if not fb:
        return f"Captions (the caption level of MVP's texts): {who}, all {rec['captions']} samples."
    if fb["samples"] >= fb["of"]:
        return (f"Captions: none ({fb['reason']}): the caption level of MVP's texts is the sentence level "
                f"(caption.sentence_template) for all {fb['of']} samples.")
    return (f"Captions (the caption level of MVP's texts): {who}; {fb['samples']} of {fb['of']} samples had none "
            f"and use the sentence level (caption.sentence_template): {fb['reason']}.")
