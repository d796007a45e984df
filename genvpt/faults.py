"""Faults a long-running stage must survive: pre-emption (SIGTERM) and injected crashes (fail points).

**Pre-emption.** ``run_stage(main)`` is how every ``python -m stages.<name>`` starts. A SIGTERM (a batch system
pre-empting the job, ``kill``, Prefect cancelling a task) raises :class:`Preempted` in the main thread at once: the
stack unwinds through every ``finally`` (the atomic writers of :mod:`genvpt.io` delete their temporary files), the
training checkpoint last written stays as it is, and the process exits with status 143 without a traceback. DVC
then sees the stage as not done (its outputs were never renamed into place) and a rerun resumes from that
checkpoint.

**Fail points** (crash-recovery testing, as databases do it). Library code marks the moments where a crash is most
harmful with ``fault_point(name)``: after a file's content is written but before it is renamed into place
(``write:<file name>``), after a directory is filled but before it replaces the old one (``write_dir:<dir name>``),
after a training checkpoint is saved (``checkpoint:<file name>``), and at the start of a stage (``start``). They
do nothing unless the environment variable ``GENVPT_FAULT`` names one::

    GENVPT_FAULT='checkpoint:*@2'         # SIGKILL this process at the 2nd training checkpoint it writes
    GENVPT_FAULT='write:model.pt:TERM'    # SIGTERM it just before model.pt is renamed into place

Syntax ``<pattern>[@<n>][:KILL|TERM|STOP]``: ``pattern`` is matched with :func:`fnmatch.fnmatch` against the
point's name, ``n`` (default 1) picks the n-th matching point this process reaches. ``STOP`` freezes the process
until a SIGCONT (how a test holds a stage mid-run). ``GENVPT_FAULT_LOG=<file>`` appends ``<point> <pid>`` for every point reached to that file
(how a harness learns where a stage can be stopped). ``tests/test_faults.py`` kills every
stage of dvc.yaml this way, reruns it and compares the outputs with an uninterrupted run's byte for byte.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import signal
import sys
from typing import Any, Callable

log = logging.getLogger(__name__)

__all__ = ["Preempted", "PREEMPTED_EXIT_CODE", "FAULT_ENV", "FAULT_LOG_ENV", "fault_point", "run_stage"]

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # 143, what shells and schedulers report for a SIGTERM'd job
FAULT_ENV = "GENVPT_FAULT"
FAULT_LOG_ENV = "GENVPT_FAULT_LOG"
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "STOP": signal.SIGSTOP}

_hits: dict[str, int] = {}


class Preempted(SystemExit):
    """The process received SIGTERM; raised in the main thread so that cleanup runs."""

    def __init__(self) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)


def _parse(spec: str) -> tuple[str, int, int]:
    pattern, sig = spec, "KILL"
    head, _, tail = spec.rpartition(":")
    if head and tail.upper() in _SIGNALS:
        pattern, sig = head, tail.upper()
    nth = 1
    if "@" in pattern:
        pattern, _, n = pattern.rpartition("@")
        try:
            nth = int(n)
        except ValueError:
            raise ValueError(f"{FAULT_ENV}={spec!r}: '@{n}' is not a count; "
                             "syntax <pattern>[@<n>][:KILL|TERM|STOP]") from None
    return pattern, nth, _SIGNALS[sig]


def fault_point(name: str) -> None:
    """Crash here if ``GENVPT_FAULT`` names this point (see the module doc); a no-op otherwise."""
    trace = os.environ.get(FAULT_LOG_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(f"{name} {os.getpid()}\n")
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    pattern, nth, sig = _parse(spec)
    if not fnmatch.fnmatch(name, pattern):
        return
    _hits[pattern] = _hits.get(pattern, 0) + 1
    if _hits[pattern] == nth:
        log.warning("fault injection: %s at %s (%s, hit %d)", signal.Signals(sig).name, name, spec, nth)
        for h in logging.getLogger().handlers:
            h.flush()
        os.kill(os.getpid(), sig)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Preempted()


def run_stage(main: Callable[[], Any]) -> None:
    """Run a stage's ``main()`` as a process entry point: SIGTERM becomes :class:`Preempted` (exit status 143,
    cleanup done, last training checkpoint kept); fail point ``start`` before anything is read."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        fault_point("start")
        main()
    except Preempted:
        log.warning("pre-empted (SIGTERM): stopped cleanly; temporary files removed, the last training checkpoint "
                    "kept; rerun the stage to resume")
        logging.shutdown()
        sys.exit(PREEMPTED_EXIT_CODE)
