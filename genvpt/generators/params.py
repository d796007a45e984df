"""params.yaml section ``generator:`` - the frozen backbones (AR, MaskGIT, VAR), their pretraining and sampling.

Every default is the embedded default's value (tiny models that train on CPU in minutes). To use published
weights, set ``<family>.checkpoint`` to the file: the pretrain stage then trains nothing and the backbone loads
that file strictly (sizes are read from the checkpoint's shapes).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from ..schema import StrictModel

__all__ = [
    "GeneratorParams",
    "GenTrainParams",
    "ARParams",
    "ARSampleParams",
    "MaskGITParams",
    "MaskGITSampleParams",
    "VARParams",
    "VARSampleParams",
    "ClassifierParams",
    "GenEvalParams",
    "FAMILIES",
]

FAMILIES = ("ar", "maskgit", "var")
Order = Literal["row_major", "alternate", "spiral_out", "spiral_in", "z_curve", "subsample", "random"]
MaskSchedule = Literal["cosine", "arccos", "linear", "square"]


class GenTrainParams(StrictModel):
    """One training run: AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    min_lr_ratio: float = Field(default=0.05, ge=0, le=1)
    weight_decay: float = Field(default=0.01, ge=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    warmup_steps: int = Field(default=50, ge=0)
    grad_clip: float = Field(default=1.0, ge=0)       # 0 = off
    label_drop: float = Field(default=0.1, ge=0, lt=1)  # classifier-free guidance: labels -> null class
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    checkpoint_every: int = Field(default=200, ge=1)  # resumable training state
    log_every: int = Field(default=20, ge=1)          # loss-curve points
    eval_every: int = Field(default=250, ge=1)        # validation loss points
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # autocast; auto = bf16 where the device supports it


class ARSampleParams(StrictModel):
    temperature: float = Field(default=1.0, ge=0)
    top_k: int = Field(default=0, ge=0)     # 0 = off (taming's own default: 100)
    top_p: float = Field(default=0.6, ge=0, le=1)  # 0 = off
    cfg: float = Field(default=1.0, ge=0)   # (1+cfg)*cond - cfg*uncond; 0 = off


class ARParams(StrictModel):
    """taming-transformers GPT over the VQGAN tokens."""

    checkpoint: Optional[str] = None          # taming cond_transformer .ckpt or a GPT state dict; skips pretraining
    tokenizer: Literal["vqgan"] = "vqgan"
    n_layer: int = Field(default=4, ge=1)
    n_head: int = Field(default=4, ge=1)
    n_embd: int = Field(default=128, ge=8)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    order: Order = "row_major"
    train: GenTrainParams = GenTrainParams(steps=1800)
    sample: ARSampleParams = ARSampleParams()


class MaskGITSampleParams(StrictModel):
    steps: int = Field(default=16, ge=1)  # MaskGIT's own: 8
    schedule: MaskSchedule = "cosine"
    temperature: float = Field(default=1.0, ge=0)
    choice_temperature: float = Field(default=1.0, ge=0)  # Gumbel noise on confidences, annealed to 0 (MaskGIT: 4.5)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=0.6, ge=0, le=1)
    cfg: float = Field(default=2.0, ge=0)
    cfg_schedule: Literal["constant", "linear"] = "constant"
    # genvpt: our decoder; official_v1: valeoai Maskgit-pytorch v1.0's sampler (adap_sche counts, CFG and Gumbel
    # ramps over t/(T-1), MASK row kept; cfg_schedule unused), e.g. schedule arccos, steps 8, cfg 3 for its FID 6.80;
    # official_v1_2023: the same with the pre-Nov-2023 ramps t/T (see genvpt/generators/maskgit.py)
    sampler: Literal["genvpt", "official_v1", "official_v1_2023"] = "genvpt"

    @model_validator(mode="after")
    def _official_steps(self) -> "MaskGITSampleParams":
        if self.sampler != "genvpt" and self.steps < 2:
            raise ValueError(f"sampler {self.sampler} needs steps >= 2 (its ramps divide by steps - 1)")
        return self


class MaskGITParams(StrictModel):
    """MaskGIT bidirectional transformer over the VQGAN tokens (valeoai PyTorch layout)."""

    checkpoint: Optional[str] = None          # valeoai MaskGIT .pth (model_state_dict) or a state dict
    tokenizer: Literal["vqgan"] = "vqgan"
    hidden_dim: int = Field(default=128, ge=8)
    depth: int = Field(default=4, ge=1)
    heads: int = Field(default=4, ge=1)
    mlp_dim: int = Field(default=512, ge=8)
    dropout: float = Field(default=0.0, ge=0, lt=1)  # MaskGIT's 0.1 only slows the under-trained tiny model
    mask_schedule: MaskSchedule = "cosine"    # training corruption
    train: GenTrainParams = GenTrainParams(steps=3000, label_smoothing=0.1, beta2=0.96)
    sample: MaskGITSampleParams = MaskGITSampleParams()


class VARSampleParams(StrictModel):
    cfg: float = Field(default=1.5, ge=0)       # ramp t = cfg * si / (K-1)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=0.6, ge=0, le=1)
    temperature: float = Field(default=1.0, ge=0)
    # the fast paths of VAR's cached step (genvpt/generators/var.py ScaleStepper; speeds: benchmarks/var_speed.py):
    compile: bool = False      # torch.compile each scale's step (one graph per scale, compiled once per batch size)
    cuda_graphs: bool = False  # capture each scale's step as a CUDA graph and replay it (needs generator.device cuda)


class VARParams(StrictModel):
    """VAR next-scale prediction over the multi-scale VQ tokens. ``depth`` sets the size as VAR does (width 64*depth,
    depth heads) unless ``embed_dim`` / ``num_heads`` override it for tiny models."""

    checkpoint: Optional[str] = None          # var_d16.pth ... (plain state dict or ['trainer']['var_wo_ddp'])
    tokenizer: Literal["msvq"] = "msvq"
    depth: int = Field(default=4, ge=1)
    embed_dim: Optional[int] = Field(default=128, ge=8)
    num_heads: Optional[int] = Field(default=4, ge=1)
    mlp_ratio: float = Field(default=4.0, gt=0)
    drop_path_rate: Optional[float] = Field(default=0.0, ge=0, lt=1)  # null = VAR's 0.1*depth/24
    attn_l2_norm: bool = True
    shared_aln: bool = False
    init_adaln_gamma: float = Field(default=1e-3, ge=0)
    train: GenTrainParams = GenTrainParams(steps=1200)
    sample: VARSampleParams = VARSampleParams()


class ClassifierParams(StrictModel):
    """The small CNN that judges the class of samples (trained on the source domain's real images)."""

    width: int = Field(default=32, ge=4)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=4e-3, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    max_shift: int = Field(default=3, ge=0)
    noise: float = Field(default=0.05, ge=0)
    blur_prob: float = Field(default=0.5, ge=0, le=1)
    blur_max: float = Field(default=1.5, ge=0)


class GenEvalParams(StrictModel):
    """Samples drawn by the pretrain stage to judge each backbone."""

    samples_per_class: int = Field(default=20, ge=1)
    batch_size: int = Field(default=120, ge=1)
    grid_per_class: int = Field(default=8, ge=1)  # columns of the sample-grid PNG (one row per class)
    seed: int = 0


class GeneratorParams(StrictModel):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = Field(default=None, ge=1)  # torch CPU threads in the stages (null: torch's default)
    ar: ARParams = ARParams()
    maskgit: MaskGITParams = MaskGITParams()
    var: VARParams = VARParams()
    classifier: ClassifierParams = ClassifierParams()
    eval: GenEvalParams = GenEvalParams()

    @model_validator(mode="after")
    def _heads_divide(self) -> "GeneratorParams":
        if self.ar.n_embd % self.ar.n_head:
            raise ValueError(f"ar.n_embd ({self.ar.n_embd}) must be divisible by ar.n_head ({self.ar.n_head})")
        if self.maskgit.hidden_dim % self.maskgit.heads:
            raise ValueError(f"maskgit.hidden_dim ({self.maskgit.hidden_dim}) must be divisible by maskgit.heads ({self.maskgit.heads})")
        width = self.var.embed_dim or 64 * self.var.depth
        heads = self.var.num_heads or self.var.depth
        if width % heads:
            raise ValueError(f"var width ({width}) must be divisible by its heads ({heads})")
        return self

    def family(self, name: str):
        if name not in FAMILIES:
            raise ValueError(f"unknown generator family {name!r}; allowed: {', '.join(FAMILIES)}")
        return getattr(self, name)
