"""Shared helpers for benchmarks: machine info and atomic result files under benchmarks/results/."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genvpt.io import write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def save_results(name: str, results: dict) -> Path:
    path = RESULTS / f"{name}.json"
    write_json(path, {"machine": machine(), **results})
    print(f"wrote {path}")
    return path
