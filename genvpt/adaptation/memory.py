"""Peak memory of one phase of work (a training loop, one benchmark step), not of the whole process.

* CUDA: ``torch.cuda.reset_peak_memory_stats`` at the start, ``max_memory_allocated`` at the end (tensor memory).
* CPU (Linux): the kernel's resident-set high-water mark ``VmHWM`` is reset by writing ``5`` to
  ``/proc/self/clear_refs`` at the start and read from ``/proc/self/status`` at the end. ``peak_mb`` is that
  high-water mark (the whole process: code, models and activations); ``delta_mb`` subtracts the resident set at the
  start, i.e. what the phase itself added at its peak (activations, gradients, optimizer state). Where the reset is
  not possible, the lifetime ``ru_maxrss`` is used and the record says so.
"""
from __future__ import annotations

import re
import resource
from pathlib import Path
from typing import Optional

import torch

__all__ = ["PeakMemory", "rss_mb"]

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> Optional[int]:
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024.0 if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakMemory:
    """``with PeakMemory(device) as pm: ...`` then ``pm.peak_mb``, ``pm.delta_mb``, ``pm.kind``."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_mb = 0.0
        self.delta_mb = 0.0
        self.start_mb = 0.0
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda_max_allocated"
        else:
            self.start_mb = rss_mb()
            try:
                _CLEAR.write_text("5")
                self.kind = "cpu_rss_high_water_mark"
            except OSError:
                self.kind = "cpu_process_max_rss"
        return self

    def stop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "cpu_rss_high_water_mark":
            kb = _status_kb("VmHWM")
            self.peak_mb = kb / 1024.0 if kb is not None else rss_mb()
        else:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.delta_mb = max(0.0, self.peak_mb - self.start_mb)

    def __exit__(self, *exc) -> None:
        self.stop()

    def as_dict(self) -> dict:
        return {"peak_memory_mb": round(self.peak_mb, 1), "peak_memory_delta_mb": round(self.delta_mb, 1),
                "peak_memory_kind": self.kind}
