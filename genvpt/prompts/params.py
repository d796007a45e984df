"""params.yaml section ``prompts``: the prompt-tuning configurations trained by ``stages/train_prompt.py``.

``prompts.base`` spells out every hyperparameter once; ``prompts.configs`` is a dict of named configurations, each a
``method`` plus only what differs from ``base``. One DVC stage instance runs per configuration
(``foreach: ${prompts.configs}`` in dvc.yaml) and writes ``data/prompts/<name>/``. Import-light (config.py loads it).

Methods (genvpt/prompts/mvp.py):

* ``mvp``: multi-scale frame prompts added to VAR's input token maps (sequence length unchanged);
* ``prefilled``: the same number of learnable tokens prepended to the sequence (Table 4 baseline);
* ``lora``: LoRA via peft on ``lora_targets`` (never ``mat_qkv``: VAR's attention reads its weight directly);
* ``finetune``: every VAR weight trains (the tokenizer and CLIP stay frozen);
* ``mvp_t2i``: text-to-image: a projected CLIP text embedding replaces the class embedding (VAR-CLIP style, learned
  null embedding for guidance); frame prompts and the projection train.
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..schema import StrictModel

__all__ = ["METHODS", "PromptConfig", "PromptsParams", "MemoryBenchmarkParams", "LORA_SAFE_TARGETS"]

METHODS = ("mvp", "prefilled", "lora", "finetune", "mvp_t2i")
# VAR modules whose forward goes through nn.Linear.__call__, so a LoRA wrapper takes effect (pgn-mvp-eval.md sec. 4).
# ``mat_qkv`` is read as ``F.linear(x, self.mat_qkv.weight, bias)``: LoRA there would silently do nothing.
LORA_SAFE_TARGETS = ("attn.proj", "ffn.fc1", "ffn.fc2", "ada_lin.1", "head")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class PromptConfig(StrictModel):
    """One prompt-tuning configuration (every field: the embedded default's value)."""

    method: Literal["mvp", "prefilled", "lora", "finetune", "mvp_t2i"] = "mvp"
    # --- where the frame prompts sit (mvp, mvp_t2i; prefilled uses the same token count) -------------------------
    tau: int = Field(default=20, ge=4)  # most prompt tokens one scale may hold; above it the ring becomes 4 L-shapes
    first_scale: bool = False  # also prompt the 1x1 first scale (off for class-to-image: Table 6)
    positions: Literal["outermost", "random", "innermost", "center_to_outer", "sub_outermost"] = "outermost"
    positions_seed: int = 0  # the seed of the random variant
    init_std: Optional[float] = Field(default=None, ge=0.0)  # null: 0 for added frame prompts, 0.02 for prefilled tokens
    # prefilled tokens start as: the frozen VAR's own input embeddings at the frame positions, averaged over training
    # samples (in-distribution tokens, "init from the vocabulary") or random normal(0, init_std)
    prefix_init: Literal["embeddings", "normal"] = "embeddings"
    # --- multi-level semantic loss ------------------------------------------------------------------------------
    lambda_sen: float = Field(default=0.02, ge=0.0)  # weight of CLIP loss(I_sen, "a photo of {class}")
    lambda_cap: float = Field(default=0.02, ge=0.0)  # weight of CLIP loss(I_cap, caption)
    beta: float = Field(default=0.6, gt=0.0, lt=1.0)  # kappa = floor(beta * K): the scale I_sen is decoded after
    soft_codes: Literal["softmax", "gumbel"] = "softmax"  # logits -> code vectors for the decoded images
    # images of each batch decoded for the CLIP terms (the first ones of the batch; null: all). Decoding and CLIP's
    # backward dominate a step's cost; the cross-entropy always uses the whole batch
    clip_batch_size: Optional[int] = Field(default=8, ge=2)
    code_temperature: float = Field(default=1.0, gt=0.0)  # softmax / Gumbel-softmax temperature
    # --- optimisation -------------------------------------------------------------------------------------------
    steps: int = Field(default=50, ge=1)
    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=1e-2, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_steps: int = Field(default=5, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    grad_clip: float = Field(default=1.0, ge=0.0)  # 0 = off
    label_drop: float = Field(default=0.1, ge=0.0, lt=1.0)  # class -> null class (text -> null) so guidance is tuned too
    seed: int = 0
    checkpoint_every: int = Field(default=25, ge=1)
    # --- LoRA ---------------------------------------------------------------------------------------------------
    lora_rank: int = Field(default=1, ge=1)
    lora_alpha: float = Field(default=2.0, gt=0.0)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lora_targets: list[str] = Field(default_factory=lambda: list(LORA_SAFE_TARGETS))
    # --- text-to-image ------------------------------------------------------------------------------------------
    t2i_text: Literal["caption", "sentence"] = "caption"  # which text conditions a training image
    t2i_init: Literal["classes", "random"] = "classes"  # projection starts by mapping class sentences to class embeddings

    @field_validator("lora_targets")
    @classmethod
    def _lora_targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("lora_targets must name at least one module suffix")
        bad = [t for t in v if t.split(".")[-1] == "mat_qkv" or "mat_qkv" in t.split(".")]
        if bad:
            raise ValueError(
                f"LoRA on {bad} would silently do nothing: VAR's attention computes F.linear(x, mat_qkv.weight, ...) "
                f"directly. Allowed targets: {', '.join(LORA_SAFE_TARGETS)}"
            )
        unknown = [t for t in v if t not in LORA_SAFE_TARGETS]
        if unknown:
            raise ValueError(f"unknown LoRA targets {unknown}; allowed: {', '.join(LORA_SAFE_TARGETS)}")
        return v

    @property
    def text_to_image(self) -> bool:
        return self.method.endswith("_t2i")

    @property
    def uses_frame_prompts(self) -> bool:
        return self.method in ("mvp", "mvp_t2i")

    def kappa(self, K: int) -> int:
        """kappa = floor(beta K), clipped to 1..K-1 (the paper's range)."""
        return min(max(1, math.floor(self.beta * K)), K - 1)


def _default_base() -> PromptConfig:
    return PromptConfig()


def _default_configs() -> dict[str, dict[str, Any]]:
    return {
        "mvp": {"method": "mvp"},
        "mvp-first-scale": {"method": "mvp", "first_scale": True},
        "mvp-tau4": {"method": "mvp", "tau": 4},
        "mvp-tau12": {"method": "mvp", "tau": 12},
        "mvp-tau28": {"method": "mvp", "tau": 28},
        "mvp-random0": {"method": "mvp", "positions": "random", "positions_seed": 0},
        "mvp-random1": {"method": "mvp", "positions": "random", "positions_seed": 1},
        "mvp-random2": {"method": "mvp", "positions": "random", "positions_seed": 2},
        "mvp-innermost": {"method": "mvp", "positions": "innermost"},
        "mvp-center-to-outer": {"method": "mvp", "positions": "center_to_outer"},
        "mvp-sub-outermost": {"method": "mvp", "positions": "sub_outermost"},
        "prefilled": {"method": "prefilled"},
        "lora": {"method": "lora", "lr": 1e-2},
        "finetune": {"method": "finetune", "lr": 1e-3, "weight_decay": 0.01},
        "mvp-t2i": {"method": "mvp_t2i", "first_scale": True},
    }


class MemoryBenchmarkParams(StrictModel):
    """benchmarks/mvp_memory.py: peak training memory of MVP vs the prefilled prompt on a randomly initialised VAR of
    ``depth`` (VAR-256 scales), ``tau`` as in Table 4. ``batch_size`` on a GPU; ``cpu_batch_size`` without one."""

    depth: int = Field(default=16, ge=1)
    tau: int = Field(default=20, ge=4)
    batch_size: int = Field(default=16, ge=1)
    cpu_batch_size: int = Field(default=2, ge=1)


class PromptsParams(StrictModel):
    """The ``prompts`` section."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = Field(default=None, ge=1)  # torch CPU threads (null: torch's default)
    memory_benchmark: MemoryBenchmarkParams = MemoryBenchmarkParams()
    base: PromptConfig = Field(default_factory=_default_base)
    # name -> {method, ...overrides of base}; the name is the folder under data/prompts and the report row
    configs: dict[str, dict[str, Any]] = Field(default_factory=_default_configs)

    @field_validator("configs")
    @classmethod
    def _names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, over in v.items():
            if not _NAME.match(name):
                raise ValueError(f"config name {name!r} must match {_NAME.pattern} (it becomes a folder name)")
            if not isinstance(over, dict):
                raise ValueError(f"configs.{name} must be a mapping of overrides of prompts.base")
            if "method" not in over:
                raise ValueError(f"configs.{name} must name its method ({', '.join(METHODS)})")
        return v

    @model_validator(mode="after")
    def _configs_validate(self) -> "PromptsParams":
        for name in self.configs:
            try:
                self.config(name)
            except ValueError as err:
                raise ValueError(f"configs.{name}: {err}") from None
        return self

    def config(self, name: str) -> PromptConfig:
        """The merged configuration ``name`` (base + its overrides), validated."""
        if name not in self.configs:
            raise KeyError(f"no prompt configuration {name!r}; params prompts.configs has: {', '.join(self.configs)}")
        merged = {**self.base.model_dump(), **self.configs[name]}
        try:
            return PromptConfig.model_validate(merged)
        except Exception as err:  # pydantic ValidationError: report the keys compactly
            errs = getattr(err, "errors", None)
            if errs is None:
                raise ValueError(str(err)) from None
            msgs = []
            for e in errs():
                key = ".".join(str(p) for p in e["loc"]) or "<root>"
                if e["type"] == "extra_forbidden":
                    msgs.append(f"{key}: unknown key; allowed: {', '.join(sorted(PromptConfig.model_fields))}")
                else:
                    msgs.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
            raise ValueError("; ".join(msgs)) from None
