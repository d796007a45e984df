"""Training loops for the three generator families on token shards (one readable loop, a per-family step).

    result = train_generator("var", gp, tokens=load_tokens(dir, "train"), val=load_tokens(dir, "val"),
                             tokenizer=tok, state_path="data/generators/var/train_state.pt", seed=0)

* AR: next-token cross-entropy in the configured sequence order, labels dropped to the null class with
  ``label_drop`` (so classifier-free guidance works).
* MaskGIT: masked-token cross-entropy (cosine masking, label smoothing), labels dropped with ``label_drop``.
* VAR: VAR's teacher-forced next-scale cross-entropy on ``tokenizer.idxBl_to_var_input`` (computed once for the
  whole split), labels dropped with ``label_drop`` (VAR's ``cond_drop_rate``).

AdamW (no weight decay on biases, norms, embeddings, position tables and VAR's ``scale_mul``), linear warm-up then
cosine decay, gradient clipping, and a resumable training state (``TrainCheckpoint``) stamped with a fingerprint of
the model config, training params and data, so a stale state from other params is never resumed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from tqdm import tqdm

from .. import distributed
from ..checkpoint import load_file
from ..training import TrainCheckpoint, check_finite, cosine_lambda, count_parameters
from .ar import GPT, ARConfig
from .maskgit import MaskGIT, MaskGITConfig
from .params import GeneratorParams, GenTrainParams
from .var import VAR, VARConfig

log = logging.getLogger(__name__)

__all__ = ["build_model", "TrainResult", "train_generator", "var_inputs", "param_groups"]


def build_model(family: str, gp: GeneratorParams, *, vocab_size: int, grid: list[int], num_classes: int, Cvae: Optional[int] = None) -> nn.Module:
    """A fresh model of ``family`` sized by params and by the tokenizer's grid / vocabulary."""
    if family == "ar":
        p = gp.ar
        if len(grid) != 1:
            raise ValueError(f"the AR model needs single-scale (VQGAN) tokens, got {len(grid)} scales")
        cfg = ARConfig(vocab_size=vocab_size, grid=grid[0], num_classes=num_classes, n_layer=p.n_layer, n_head=p.n_head,
                       n_embd=p.n_embd, embd_pdrop=p.dropout, resid_pdrop=p.dropout, attn_pdrop=p.dropout, order=p.order)
        return GPT(cfg)
    if family == "maskgit":
        p = gp.maskgit
        if len(grid) != 1:
            raise ValueError(f"MaskGIT needs single-scale (VQGAN) tokens, got {len(grid)} scales")
        cfg = MaskGITConfig(vocab_size=vocab_size, grid=grid[0], num_classes=num_classes, hidden_dim=p.hidden_dim,
                            depth=p.depth, heads=p.heads, mlp_dim=p.mlp_dim, dropout=p.dropout)
        return MaskGIT(cfg)
    if family == "var":
        p = gp.var
        if len(grid) < 2 or grid[0] != 1:
            raise ValueError(f"VAR needs multi-scale tokens starting at 1x1, got scales {grid}")
        if Cvae is None:
            raise ValueError("VAR needs the tokenizer's latent width Cvae")
        cfg = VARConfig(vocab_size=vocab_size, Cvae=Cvae, num_classes=num_classes, depth=p.depth, embed_dim=p.embed_dim,
                        num_heads=p.num_heads, mlp_ratio=p.mlp_ratio, drop_path_rate=p.drop_path_rate,
                        attn_l2_norm=p.attn_l2_norm, shared_aln=p.shared_aln, cond_drop_rate=p.train.label_drop,
                        patch_nums=tuple(grid), init_adaln_gamma=p.init_adaln_gamma)
        return VAR(cfg)
    raise ValueError(f"unknown generator family {family!r}; allowed: ar, maskgit, var")


_NO_DECAY_NAMES = ("emb", "pos_", "scale_mul", "bias", "ada_gss")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices only (not biases, norms, embeddings, position tables, scale_mul)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() < 2 or any(s in name for s in _NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.inference_mode()
def var_inputs(tokenizer: Any, scales: list[torch.Tensor], batch_size: int = 512) -> torch.Tensor:
    """Teacher-forcing inputs [N, L-1, Cvae] for a whole split (``tokenizer.idxBl_to_var_input`` in batches)."""
    dev = tokenizer.quantize.embedding.weight.device
    out = []
    N = scales[0].shape[0]
    for i in range(0, N, batch_size):
        out.append(tokenizer.idxBl_to_var_input([s[i:i + batch_size].to(dev) for s in scales]).float().cpu())
    return torch.cat(out)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


class _Batches:
    """Deterministic shuffled batches: step s uses epoch s // steps_per_epoch's permutation (seeded), so a resumed
    run sees the same batches as an uninterrupted one."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.bs, self.seed = n, min(batch_size, n), seed
        self.per_epoch = max(1, n // self.bs)
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm[i * self.bs:(i + 1) * self.bs]


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if torch.is_tensor(p):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class _FamilyData:
    """Tensors one family trains on, with a loss function on a batch of indices."""

    def __init__(self, family: str, model: nn.Module, tokens, tokenizer, tp: GenTrainParams, device: torch.device,
                 schedule: str = "cosine"):
        self.family, self.model, self.tp, self.device, self.schedule = family, model, tp, device, schedule
        self.labels = tokens.labels.long()
        if family == "var":
            self.x = var_inputs(tokenizer, tokens.scales)
            self.gt = torch.cat(tokens.scales, dim=1).long()
        else:
            self.gt = tokens.scales[0].long()

    def __len__(self) -> int:
        return self.labels.shape[0]

    def loss(self, idx: torch.Tensor, *, train: bool, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        m, tp, dev = self.model, self.tp, self.device
        y = self.labels[idx].to(dev)
        gt = self.gt[idx].to(dev)
        if self.family == "ar":
            if train and tp.label_drop > 0:
                drop = distributed.batch_rand(y.shape[0], device=dev, generator=generator) < tp.label_drop
                y = y.masked_fill(drop, m.null_label)
            _, loss = m(gt, y, label_smoothing=tp.label_smoothing)
            return loss
        if self.family == "maskgit":
            return m.loss(gt, y, label_smoothing=tp.label_smoothing, label_drop=tp.label_drop if train else 0.0,
                          schedule=self.schedule, generator=generator)
        x = self.x[idx].to(dev)
        if train and distributed.in_shard() and m.training and m.cfg.cond_drop_rate > 0:
            # the draw VAR's forward makes (its first), made for the global batch: this rank keeps its rows
            drop = distributed.batch_rand(y.shape[0], device=y.device) < m.cfg.cond_drop_rate
            with _no_cond_drop(m):
                logits = m(y.masked_fill(drop, m.num_classes), x)
        else:
            logits = m(y, x)  # VAR drops labels itself in train mode (cond_drop_rate)
        return m.loss(logits, gt, label_smoothing=tp.label_smoothing)


class _TrainLoss(nn.Module):
    """The training loss of a batch of indices as a module's forward (what DistributedDataParallel wraps: MaskGIT
    trains through ``loss()``, not ``forward()``)."""

    def __init__(self, data: _FamilyData):
        super().__init__()
        self.model = data.model
        self._data = [data]  # not a submodule

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self._data[0].loss(idx, train=True)


class _no_cond_drop:
    """VAR's ``cond_drop_rate`` set to 0 for one call (the labels were dropped for the global batch already)."""

    def __init__(self, model: nn.Module):
        self.model, self.rate = model, model.cfg.cond_drop_rate

    def __enter__(self) -> None:
        self.model.cfg.cond_drop_rate = 0.0

    def __exit__(self, *exc: Any) -> None:
        self.model.cfg.cond_drop_rate = self.rate


def train_generator(
    family: str,
    gp: GeneratorParams,
    *,
    tokens,
    val_tokens=None,
    tokenizer: Any = None,
    state_path: str | Path | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train a fresh ``family`` model on ``tokens`` (a :class:`TokenData`); resumes from ``state_path`` when it
    holds a state with the same fingerprint (a finished state trains nothing). The state file is left in place."""
    device = torch.device(device)
    fp_params = gp.family(family)
    tp: GenTrainParams = fp_params.train
    num_classes = len(tokens.class_names)
    vocab = _vocab_size(tokenizer, tokens)
    Cvae = getattr(tokenizer, "Cvae", None) if family == "var" else None
    torch.manual_seed(seed)
    model = build_model(family, gp, vocab_size=vocab, grid=list(tokens.grid), num_classes=num_classes, Cvae=Cvae).to(device)
    schedule = gp.maskgit.mask_schedule
    data = _FamilyData(family, model, tokens, tokenizer, tp, device, schedule)
    val = None
    if val_tokens is not None and len(val_tokens):
        val = _FamilyData(family, model, val_tokens, tokenizer, tp, device, schedule)

    opt = torch.optim.AdamW(param_groups(model, tp.weight_decay), lr=tp.lr, betas=(tp.beta1, tp.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(tp.steps, tp.warmup_steps, tp.min_lr_ratio))
    fingerprint = _fingerprint(family, model.cfg.to_dict(), tp.model_dump(), seed, data.gt, data.labels)

    ckpt = TrainCheckpoint(state_path, every=tp.checkpoint_every) if state_path else None
    start, history, prior_seconds = 0, [], 0.0
    world, main = distributed.world_size(), distributed.is_main()
    if ckpt is not None and ckpt.path.exists():
        saved = _saved_fingerprint(ckpt.path)
        if saved == fingerprint:  # every rank loads the state
            start = ckpt.resume(model, opt, sched)
            history = list(ckpt.extra.get("history", []))
            prior_seconds = float(ckpt.extra.get("train_seconds", 0.0))
        else:
            log.warning("ignoring training state %s: it was made with other params or data (fingerprint %s != %s)",
                        ckpt.path, saved, fingerprint)
            distributed.barrier()  # every rank has read it before rank 0 removes it
            if main:
                ckpt.remove()

    precision = resolve_precision(tp.precision, device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    batches = _Batches(len(data), tp.batch_size, seed)
    # the global batch (every rank draws it) and this rank's equal slice of it; one process: the whole batch
    shard = distributed.batch_shard(batches.bs, f"generator.{family}.train.batch_size")
    # DDP over several processes (buffers never change in training and are equal on every rank: not broadcast);
    # in one process the loss module itself
    step_loss = distributed.wrap_ddp(_TrainLoss(data), broadcast_buffers=False)
    if world > 1:
        if _module_randomness(model):
            log.warning("generator %s: dropout / drop-path masks are drawn per process: %d processes agree with one "
                        "in distribution only", family, world)
    val_gen = torch.Generator(device=device)
    t0 = time.time()
    window: list[float] = []
    bar = tqdm(range(start, tp.steps), desc=f"train {family}", disable=not (progress and main), initial=start,
               total=tp.steps)
    model.train()
    for step in bar:
        with autocast(), shard:  # this rank's rows of the global batch (one process: all of them)
            loss = step_loss(batches(step)[shard.rows])
        (reported,) = distributed.mean_across([loss])  # the global batch's loss, on every rank
        check_finite(reported, step + 1, f"generator {family} training", ckpt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tp.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip)
        opt.step()
        sched.step()
        window.append(reported)
        done = step + 1
        if done % tp.log_every == 0 or done == tp.steps:
            row = {"step": done, "loss": sum(window) / len(window), "lr": opt.param_groups[0]["lr"]}
            window = []
            if val is not None and (done % tp.eval_every == 0 or done == tp.steps):
                with autocast():
                    row["val_loss"] = _val_loss(val, val_gen, seed, tp.batch_size)
                model.train()
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
        if ckpt is not None and done < tp.steps and main:
            ckpt.maybe_save(done, model, opt, sched, history=history, fingerprint=fingerprint,
                            train_seconds=prior_seconds + time.time() - t0)
    if ckpt is not None and start < tp.steps and main:  # the finished state: a rerun with the same fingerprint trains nothing
        ckpt.save(tp.steps, model, opt, sched, history=history, fingerprint=fingerprint,
                  train_seconds=prior_seconds + time.time() - t0)
    model.eval()
    rows_with_val = [r for r in history if "val_loss" in r]
    summary = {
        "family": family,
        "steps": tp.steps,
        "resumed_from_step": start,
        "train_seconds_this_run": time.time() - t0,
        "train_seconds": prior_seconds + time.time() - t0,  # all runs together (resumed training included)
        "final_train_loss": history[-1]["loss"] if history else None,
        "final_val_loss": rows_with_val[-1]["val_loss"] if rows_with_val else None,
        "parameters": count_parameters(model),
        "precision": precision,
        "fingerprint": fingerprint,
    }
    if world > 1:
        summary["world_size"] = world  # absent: one process
    # curves keep one schema: every row has the same keys (val_loss empty where not evaluated)
    keys = ["step", "loss", "lr", "val_loss"]
    history = [{k: r.get(k, "") for k in keys} for r in history]
    return TrainResult(model=model, history=history, summary=summary)


def _module_randomness(model: nn.Module) -> bool:
    """Whether training draws masks inside the model (dropout, drop-path) that no rank shares."""
    for mod in model.modules():
        p = getattr(mod, "p", 0.0) if isinstance(mod, nn.Dropout) or type(mod).__name__ == "DropPath" else 0.0
        attn = getattr(mod, "attn_drop", 0.0)  # attention dropout given to the attention kernel as a rate
        if (isinstance(p, float) and p > 0) or (isinstance(attn, float) and attn > 0):
            return True
    return False


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``bf16`` (autocast; weights and optimizer stay fp32) when asked for, or for ``auto`` where the hardware has
    fast bf16 (CUDA with bf16, CPUs with AVX512-BF16 / AMX); else ``fp32``."""
    if precision == "bf16" and not bf16_supported(device):
        log.warning("precision bf16 asked for, but %s has no fast bf16: expect slow training", device)
    return "bf16" if precision == "bf16" or (precision == "auto" and bf16_supported(device)) else "fp32"


@torch.no_grad()
def _val_loss(val: _FamilyData, g: torch.Generator, seed: int, batch_size: int) -> float:
    val.model.eval()
    g.manual_seed(seed + 12345)
    tot, n = 0.0, 0
    for i in range(0, len(val), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(val)))
        tot += float(val.loss(idx, train=False, generator=g)) * len(idx)
        n += len(idx)
    return tot / max(1, n)


def _saved_fingerprint(path: Path) -> Optional[str]:
    try:
        return load_file(path).get("extra", {}).get("fingerprint")
    except Exception:  # unreadable state: treat as stale
        return None


def _vocab_size(tokenizer: Any, tokens) -> int:
    for attr in ("vocab_size", "n_embed"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    raise ValueError("the tokenizer exposes no vocab_size / n_embed")
