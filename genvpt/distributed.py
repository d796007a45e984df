"""Multi-process training under ``torchrun``: one process per device, the same global batch as one process.

When params ``distributed.nproc_per_node`` is more than 1, a training stage's entry point re-launches itself as
``python -m torch.distributed.run --standalone --nproc_per_node N -m stages.<name> <same args>`` (unless torchrun
already started it: a multi-node job runs torchrun itself). Each process then reads torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``), joins the process group (gloo on
CPU, nccl on CUDA with device ``cuda:<LOCAL_RANK>``) and trains on its equal slice of every global batch:

* **Same global batch, same draws.** Every rank draws the whole global batch's indices, condition drops and noise
  from the same seeded generators, then keeps its rows (:class:`BatchShard`). Random draws made per sample inside
  a loss (MaskGIT's masks, label drops, VPT's prompt dropout) go through :func:`batch_rand` /
  :func:`batch_dropout`, which draw for the whole global batch and slice while a shard is active, and are plain
  ``torch.rand`` / dropout otherwise (one process: byte-identical to code without this module).
* **Gradients.** Losses are means over a rank's equal slice, so the mean of the ranks' gradients is the global
  batch's gradient. Generator pretraining (the whole model trains) wraps its loss module in
  ``DistributedDataParallel`` (:func:`wrap_ddp`: gradients all-reduced in buckets while backward runs). Prompt
  training all-reduces the trainable parameters' gradients itself (:func:`all_reduce_grads`): its trainable
  parameters are spread over the method and, for LoRA / fine-tuning, inside the frozen generator, its step is no
  single module's forward (injections, backbone loss, extra terms), and DDP would register and broadcast the whole
  frozen backbone and need ``find_unused_parameters`` for prompts a step does not use; a few thousand prompt
  parameters gain nothing from DDP's overlap. A parameter without a gradient on every rank stays without one, as
  it would in one process (AdamW then skips it).
* **Logs and records** hold the mean over ranks of each step's loss (:func:`mean_across`), i.e. the global batch's
  loss; only rank 0 (:func:`is_main`) writes outputs, checkpoints and records; every rank loads a checkpoint to
  resume. Ranks other than 0 log warnings and errors only.

Randomness drawn inside modules without these helpers (generator dropout / drop-path, LoRA dropout, MVP's CLIP
terms over each rank's slice) is not shared: with it, results agree with one process in distribution only
(the shipped defaults have none of it, except the CLIP terms, which are then computed per rank).
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Optional, Sequence

import torch
import torch.distributed as dist
from pydantic import Field

from .schema import StrictModel

log = logging.getLogger(__name__)

__all__ = ["DistributedParams", "LaunchEnv", "launch_env", "torchrun_command", "relaunch_under_torchrun",
           "init", "destroy", "session", "is_initialized", "rank", "world_size", "local_rank", "is_main",
           "rank_device", "BatchShard", "batch_shard", "in_shard", "batch_rand", "batch_dropout", "wrap_ddp", "all_reduce_grads",
           "mean_across", "barrier", "batch_size_errors"]

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedParams(StrictModel):
    """params ``distributed:`` how many training processes the training stages (generator pretraining, prompt
    training, classifier prompts) run on this machine. 1 = one process (today's behaviour). More: the stage re-launches itself under
    torchrun; every global batch size must then divide by ``nproc_per_node``."""

    nproc_per_node: int = Field(default=1, ge=1)  # processes (GPUs) on this machine
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl when training on CUDA, else gloo


# ------------------------------------------------------------------------------------------------ the environment
@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun tells each process."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def launch_env(environ: Optional[dict] = None) -> Optional[LaunchEnv]:
    """torchrun's variables, or None when this process was not launched by torchrun."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    missing = [k for k in TORCHRUN_ENV if k not in env]
    if missing:
        raise RuntimeError(f"launched with RANK/WORLD_SIZE but without {', '.join(missing)}: start the stage with "
                           f"torchrun (python -m torch.distributed.run), which sets them all")
    try:
        out = LaunchEnv(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]), local_rank=int(env["LOCAL_RANK"]),
                        master_addr=str(env["MASTER_ADDR"]), master_port=int(env["MASTER_PORT"]))
    except ValueError as err:
        raise RuntimeError(f"torchrun's environment is malformed: {err}") from None
    if out.world_size < 1 or not 0 <= out.rank < out.world_size:
        raise RuntimeError(f"torchrun's environment is inconsistent: RANK {out.rank}, WORLD_SIZE {out.world_size}")
    return out


def torchrun_command(module: str, argv: Sequence[str], nproc: int, python: Optional[str] = None) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m <module> <argv>``."""
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(int(nproc)),
            "-m", module, *[str(a) for a in argv]]


def relaunch_under_torchrun(dp: DistributedParams, module: str, argv: Optional[Sequence[str]] = None) -> bool:
    """Re-launch stage ``module`` under torchrun when ``dp`` asks for more than one process and torchrun did not
    start this one; return False when nothing was done (run here).

    ``argv`` None (the process entry point): the process becomes torchrun (``os.execv``: same process id, so
    SIGTERM from DVC / Prefect reaches torchrun, which forwards it to the workers). Given ``argv`` (``main(argv)``
    called from Python): torchrun runs as a child and this call returns True once it finished (an error exit raises
    ``SystemExit`` with its status; SIGTERM here is forwarded to it)."""
    if dp.nproc_per_node <= 1 or launch_env() is not None:
        return False
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = torchrun_command(module, args, dp.nproc_per_node)
    log.info("distributed.nproc_per_node %d: re-launching under torchrun: %s", dp.nproc_per_node, " ".join(cmd))
    for h in logging.getLogger().handlers:
        h.flush()
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(cmd[0], cmd)
    proc = subprocess.Popen(cmd)
    try:
        rc = proc.wait()
    except BaseException:  # Preempted (SIGTERM), KeyboardInterrupt: stop the workers too
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if rc != 0:
        raise SystemExit(rc)
    return True


# ------------------------------------------------------------------------------------------------ the process group
_state = {"backend": None, "local_rank": 0}


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(_state["local_rank"]) if is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes outputs, checkpoints and records."""
    return rank() == 0


def _resolve_backend(backend: str, device: "str | torch.device | None") -> str:
    if backend != "auto":
        return backend
    if device is None or str(device) == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(backend: str = "auto", device: "str | torch.device | None" = None) -> Optional[LaunchEnv]:
    """Join the process group torchrun's environment describes (nothing when not launched by torchrun); return it.

    ``backend`` auto: nccl when ``device`` (the stage's training device: ``auto``, ``cpu``, ``cuda``) is CUDA, else
    gloo. On CUDA each process uses ``cuda:<LOCAL_RANK>``."""
    env = launch_env()
    if env is None or is_initialized():
        return env
    be = _resolve_backend(backend, device)
    if be == "nccl":
        n = torch.cuda.device_count()
        if env.local_rank >= n:
            raise RuntimeError(f"distributed.nproc_per_node: process {env.local_rank} needs a CUDA device but torch "
                               f"sees {n}; ask for at most {n} processes per node")
        torch.cuda.set_device(env.local_rank)
    _state.update(backend=be, local_rank=env.local_rank)
    # env:// reads the same variables (and, under torchrun, joins the store torchrun's agent already serves)
    dist.init_process_group(backend=be, init_method="env://", rank=env.rank, world_size=env.world_size)
    if env.rank != 0:  # one process reports progress; the others only what goes wrong
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
    log.info("distributed: rank %d of %d (local rank %d), backend %s", env.rank, env.world_size, env.local_rank, be)
    return env


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()
    _state.update(backend=None, local_rank=0)


@contextlib.contextmanager
def session(dp: Optional[DistributedParams] = None, device: "str | torch.device | None" = None) -> Iterator[Optional[LaunchEnv]]:
    """``init`` on entry (when launched by torchrun), ``destroy`` on exit; a no-op in a plain process."""
    started = not is_initialized()
    env = init(dp.backend if dp is not None else "auto", device)
    try:
        yield env
    finally:
        if started:
            destroy()


def rank_device(device: "str | torch.device") -> torch.device:
    """The device this rank trains on: ``cuda`` -> ``cuda:<LOCAL_RANK>`` in a process group, else unchanged."""
    dev = torch.device(device)
    if dev.type == "cuda" and is_initialized() and dev.index is None:
        return torch.device("cuda", local_rank())
    return dev


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _comm_device(like: Optional[torch.Tensor] = None) -> torch.device:
    if _state["backend"] == "nccl":
        return torch.device("cuda", local_rank())
    return like.device if like is not None else torch.device("cpu")


# ------------------------------------------------------------------------------------------------ the global batch
_active = threading.local()


@dataclass(frozen=True)
class BatchShard:
    """Rows ``start:stop`` of a global batch of ``total`` samples: this rank's slice. As a context manager it makes
    :func:`batch_rand` / :func:`batch_dropout` draw for the whole global batch and keep these rows (a no-op when the
    slice is the whole batch)."""

    total: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def split(self) -> bool:
        """True when this rank holds only part of the batch."""
        return self.size != self.total

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    def __enter__(self) -> "BatchShard":
        stack = getattr(_active, "stack", None)
        if stack is None:
            stack = _active.stack = []
        stack.append(self if self.split else None)
        return self

    def __exit__(self, *exc: Any) -> None:
        _active.stack.pop()


def _current() -> Optional[BatchShard]:
    stack = getattr(_active, "stack", None)
    return stack[-1] if stack else None


def in_shard() -> bool:
    """True inside an active split :class:`BatchShard` (this rank holds part of the global batch)."""
    return _current() is not None


def batch_shard(total: int, key: str, *, world: Optional[int] = None, at: Optional[int] = None) -> BatchShard:
    """This rank's equal slice of a global batch of ``total`` samples; ``key`` is the params key that set it (named
    in the error when ``total`` does not divide by the world size). ``world`` / ``at`` default to the process group's
    size and this rank."""
    world = world_size() if world is None else int(world)
    at = rank() if at is None else int(at)
    total = int(total)
    if world < 1 or not 0 <= at < world:
        raise ValueError(f"rank {at} of world size {world} is not a process of the group")
    if total % world:
        raise ValueError(f"{key}: the global batch of {total} samples does not divide by the {world} training "
                         f"processes (distributed.nproc_per_node); choose a batch size that is a multiple of {world}"
                         + (" (the batch is capped at the number of training samples)" if world > 1 else ""))
    per = total // world
    return BatchShard(total=total, start=at * per, stop=(at + 1) * per)


def batch_rand(n: int, *shape: int, **kw: Any) -> torch.Tensor:
    """``torch.rand(n, *shape, **kw)`` for a batch of ``n`` samples (one row each). Inside an active split
    :class:`BatchShard` it draws the global batch's rows from the same generator and returns this rank's, so each
    sample gets the number it gets in one process."""
    s = _current()
    if s is None:
        return torch.rand(n, *shape, **kw)
    if n != s.size:
        raise RuntimeError(f"batch_rand: {n} rows drawn inside a batch shard of {s.size} rows (of {s.total})")
    return torch.rand(s.total, *shape, **kw)[s.start:s.stop]


def batch_dropout(dropout: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``dropout(x)`` for ``x`` of one row per sample. Inside an active split :class:`BatchShard` the mask is drawn
    for the global batch (dropout of ones: the mask times 1/(1-p), as dropout draws it) and this rank's rows are
    applied, which equals the single process's ``dropout`` on these rows."""
    s = _current()
    if s is None or not dropout.training or getattr(dropout, "p", 0.0) == 0.0:
        return dropout(x)
    if x.shape[0] != s.size:
        raise RuntimeError(f"batch_dropout: {x.shape[0]} rows inside a batch shard of {s.size} rows (of {s.total})")
    noise = dropout(torch.ones((s.total, *x.shape[1:]), dtype=x.dtype, device=x.device))[s.start:s.stop]
    return x * noise


# ------------------------------------------------------------------------------------------------ gradients, losses
def wrap_ddp(module: torch.nn.Module, **kw: Any) -> torch.nn.Module:
    """``module`` in ``DistributedDataParallel`` when there is more than one process and it has trainable
    parameters; otherwise ``module`` itself. Inputs stay where the caller put them (no ``device_ids``: the module
    is on this rank's device already)."""
    if world_size() == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, **kw)


def all_reduce_grads(params: Iterable[torch.nn.Parameter], bucket_mb: float = 25.0) -> None:
    """Replace every parameter's gradient by the mean over the ranks (a no-op in one process). A parameter without
    a gradient on any rank keeps none; one with a gradient on some ranks counts zeros for the others. Gradients
    travel in flat buckets of about ``bucket_mb`` MiB (one all-reduce each)."""
    W = world_size()
    if W == 1:
        return
    params = list(params)
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=_comm_device())
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    grads: list[torch.Tensor] = []
    for p, h in zip(params, has.tolist()):
        if not h:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    limit = int(bucket_mb * 2**20)
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads + [None]:  # type: ignore[list-item]
        flush = g is None or (bucket and (g.dtype != bucket[0].dtype or g.device != bucket[0].device
                                          or size + g.numel() * g.element_size() > limit))
        if flush and bucket:
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat.div_(W)
            off = 0
            for b in bucket:
                b.copy_(flat[off:off + b.numel()].view_as(b))
                off += b.numel()
            bucket, size = [], 0
        if g is not None:
            bucket.append(g)
            size += g.numel() * g.element_size()


def mean_across(values: Sequence["torch.Tensor | float"]) -> list[float]:
    """The mean over ranks of each value (detached; one all-reduce in float64); the values themselves in one
    process."""
    vals = [float(v.detach()) if torch.is_tensor(v) else float(v) for v in values]
    W = world_size()
    if W == 1 or not vals:
        return vals
    t = torch.tensor(vals, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return (t / W).tolist()


def batch_size_errors(params: Any, nproc: int) -> list[tuple[str, str]]:
    """(key, message) for every global batch of a training stage that does not divide by ``nproc`` processes:
    ``generator.<family>.train.batch_size`` (families that train), the adaptation configurations' and the
    classification configurations' batch sizes."""
    out: list[tuple[str, str]] = []
    if nproc <= 1:
        return out

    def bad(key: str, bs: int) -> None:
        if bs % nproc:
            out.append((key, f"{bs} does not divide by distributed.nproc_per_node {nproc}: every training process "
                             f"takes an equal slice of the global batch"))

    from .generators.params import FAMILIES

    gp = params.generator
    for fam in FAMILIES:
        fp = getattr(gp, fam)
        if not fp.checkpoint:
            bad(f"generator.{fam}.train.batch_size", fp.train.batch_size)
    ap = params.adaptation
    inherit = False  # a configuration trains with adaptation.train.batch_size
    for name, raw in ap.configs.items():
        over = raw.get("train") if isinstance(raw, dict) else None
        if isinstance(over, dict) and "batch_size" in over:
            bad(f"adaptation.configs.{name}.train.batch_size", ap.config(name).train.batch_size)
        else:
            inherit = True
    if inherit:
        bad("adaptation.train.batch_size", ap.train.batch_size)
    cp = params.classify  # classifier prompts: zero_shot does not train, every other configuration does
    inherit = False
    for name, raw in cp.configs.items():
        over = raw.get("train") if isinstance(raw, dict) else None
        if isinstance(over, dict) and "batch_size" in over:
            bad(f"classify.configs.{name}.train.batch_size", cp.config(name).train.batch_size)
        elif isinstance(raw, dict) and raw.get("method") != "zero_shot":
            inherit = True
    if inherit:
        bad("classify.train.batch_size", cp.train.batch_size)
    return out
