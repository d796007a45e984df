"""Compare two runs' outputs: byte for byte, except the fields that measure the run itself (wall-clock times,
throughput, peak memory), which two uninterrupted runs do not share either; those are compared by presence only.
Tensors (weights, optimizer state) are compared exactly, bit for bit."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import torch

# keys / columns that describe the run itself, not its result: seconds, throughput, memory, load, where it resumed
VOLATILE = re.compile(r"(seconds?|(^|_)s$|per_s$|per_sec|time|elapsed|memory|_mb$|rss|throughput|_ms$|per_second"
                      r"|load_average|resumed)", re.IGNORECASE)


def _norm(obj: Any, where: str) -> Any:
    if isinstance(obj, dict):
        return {k: ("<measured>" if isinstance(k, str) and VOLATILE.search(k) else _norm(v, f"{where}.{k}"))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_norm(v, where) for v in obj)
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().reshape(-1).contiguous()
        return ("tensor", str(obj.dtype), tuple(obj.shape),
                flat.view(torch.uint8).tolist() if flat.numel() and flat.dtype != torch.bool else flat.tolist())
    return obj


def _load(path: Path) -> Any:
    suffix = path.suffix
    if suffix == ".json":
        return _norm(json.loads(path.read_text()), path.name)
    if suffix == ".pt":
        return _norm(torch.load(path, map_location="cpu", weights_only=True), path.name)
    if suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path)
        keep = [c for c in df.columns if not VOLATILE.search(str(c))]
        return (list(df.columns), df[keep].to_json(orient="split", double_precision=15))
    if suffix == ".csv":
        import pandas as pd

        df = pd.read_csv(path)
        keep = [c for c in df.columns if not VOLATILE.search(str(c))]
        return (list(df.columns), df[keep].to_json(orient="split", double_precision=15))
    return path.read_bytes()


def differences(a: Path, b: Path) -> list[str]:
    """Names of the files under ``a`` and ``b`` (files or folders) that differ beyond measured fields."""
    if a.is_file() or b.is_file():
        pairs = [("", a, b)]
    else:
        names = sorted({p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
                       | {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()})
        pairs = [(n, a / n, b / n) for n in names]
    out = []
    for name, x, y in pairs:
        if not x.is_file() or not y.is_file():
            out.append(f"{name or a.name}: only in {'second' if y.is_file() else 'first'}")
        elif x.read_bytes() != y.read_bytes() and _load(x) != _load(y):
            out.append(f"{name or a.name}: content differs")
    return out
