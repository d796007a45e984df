"""VPT-generative (Sohn et al., CVPR 2023): prompt tokens prepended to a frozen AR or NAR generator, produced by a
prompt token generator P(c) from a condition c.

* ``condition``: ``class`` (one prompt per class, the default) or ``instance`` (every training image its own id);
  row R (after the R classes or instances) is the learned *null* prompt, used for dropped conditions in training and
  as guidance's unconditional branch when sampling.
* ``factorization``:
  - ``none``: a table of (R+1) x S x D prompt vectors;
  - ``additive`` (the released code's ``PromptGenerator``): condition embedding [R+1, D] + position embedding
    [S, D], LayerNorm (eps 1e-12), an optional Dense D->D (``dense``), dropout. The LayerNorm's output has unit
    scale; the released code feeds it to a MaskGIT whose embedding stage ends in a LayerNorm, so its prompts enter at
    the scale of the frozen model's own inputs. ``norm_gain: embedding`` (the default) keeps that property on any
    backbone: the LayerNorm's gain starts at the per-vector std of the backbone's class-token embeddings (near 1 on
    genvpt's MaskGIT, far below it on the taming GPT, whose embeddings have no LayerNorm); ``unit`` starts it at 1;
  - ``product`` (rank F): prompt[c, s] = sum_f a[c, f] * B[f, s, :] with a [R+1, F] and B [F, S, D].
* As in the released code the prompt takes the class token's slot (``replace_class_token``); the backbone's loss is
  then next-token cross-entropy after the prompt (AR) or the masked-token cross-entropy with label smoothing 0.1 and
  per-sample normalisation by the masked count (MaskGIT).

Instance prompts sample class c from the prompts of that class's training images, in turn.

``gate`` (beyond the released code): with the class token kept, every image token attends to the prompt through
its own softmax scaled by a learned per-layer, per-head gate that starts at 0 (LLaMA-Adapter's zero-init attention;
``generators.common.gated_prefix_attend``). Training then starts exactly at the frozen generator, whatever the
prompts' init, instead of at a frozen network disturbed by tokens it never saw before its class token.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field, model_validator
from torch import nn

from ...backbones.base import Injections
from ...distributed import batch_dropout
from ...schema import StrictModel
from ..method import Method


class VPTParams(StrictModel):
    prompt_length: int = Field(default=32, ge=1)  # S (the released code's seq_length)
    condition: Literal["class", "instance"] = "class"
    factorization: Literal["none", "additive", "product"] = "none"
    rank: int = Field(default=4, ge=1)  # F of the product factorization
    dense: bool = False  # additive: the optional Dense after the LayerNorm
    # additive: the LayerNorm's gain at the start; embedding = the std of the backbone's class-token embeddings (the
    # prompts enter at the scale of the frozen model's inputs), unit = 1 (the released code, on a LayerNormed MaskGIT)
    norm_gain: Literal["embedding", "unit"] = "embedding"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)  # on the prompts in training (released code: 0.1)
    init_std: float = Field(default=0.02, ge=0.0)
    # normal: N(0, init_std) (the released code); condition: every prompt token of condition c starts as the frozen
    # backbone's own embedding of c's class token (instances: their class's; the null prompt: the null class), plus
    # N(0, init_std), so training starts near the frozen model's conditioning (factorization none / additive)
    init: Literal["normal", "condition"] = "normal"
    replace_class_token: bool = True  # the prompt takes the class token's slot (released code)
    # zero-init gated prompt attention (needs replace_class_token false: the frozen model keeps its own inputs)
    gate: bool = False

    @model_validator(mode="after")
    def _compatible(self) -> "VPTParams":
        if self.gate and self.replace_class_token:
            raise ValueError("gate: true needs replace_class_token: false (a gated prompt starts at the frozen "
                             "model, which needs its class token)")
        if self.init == "condition" and self.factorization == "product":
            raise ValueError("vpt init 'condition' needs factorization none or additive")
        return self


class VPT(Method):
    name = "vpt"
    Params = VPTParams

    @classmethod
    def required_features(cls, params: VPTParams) -> set[str]:
        need = {"prefix", "replace_condition"} if params.replace_class_token else {"prefix"}
        return need | {"prefix_gate"} if params.gate else need

    def __init__(self, params: VPTParams, backbone, info, *, seed: int = 0):
        super().__init__(params, backbone, info, seed=seed)
        p = params
        R = len(info.instance_labels) if p.condition == "instance" else info.num_classes
        if R < 1:
            raise ValueError(f"vpt with condition {p.condition!r} needs at least one {p.condition}")
        self.rows = R  # row R = the null prompt
        S, D = p.prompt_length, backbone.width
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 29)

        def normal(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g) * p.init_std)

        if p.factorization == "none":
            self.table = normal(R + 1, S, D)
        elif p.factorization == "additive":
            self.cond_emb = normal(R + 1, D)
            self.pos_emb = normal(S, D)
            self.norm = nn.LayerNorm(D, eps=1e-12)
            self.dense = nn.Linear(D, D) if p.dense else None
        else:
            self.cond_factors = normal(R + 1, p.rank)
            self.basis = normal(p.rank, S, D)
        self.drop = nn.Dropout(p.dropout)
        # [layers, heads] at 0: the prompt starts shut out of the frozen attention
        self.gate = nn.Parameter(torch.zeros(*backbone.gate_shape)) if p.gate else None
        if p.condition == "instance":
            self.register_buffer("instance_labels", torch.tensor(info.instance_labels, dtype=torch.long),
                                 persistent=False)
        self.to(backbone.device)

    @property
    def replaces_condition(self) -> bool:
        return self.params.replace_class_token

    @torch.no_grad()
    def setup(self, ctx) -> None:
        p = self.params
        gain = p.factorization == "additive" and p.norm_gain == "embedding"
        if not gain and p.init != "condition":
            return
        emb = self.row_embeddings()  # [R+1, D]
        if gain:  # the prompts start at the scale of the backbone's own condition embeddings
            self.norm.weight.fill_(float(emb.float().std(dim=-1).mean()))
        if p.init != "condition":
            return
        if p.factorization == "none":
            self.table.add_(emb[:, None, :])
        else:
            self.cond_emb.add_(emb)

    @torch.no_grad()
    def row_embeddings(self) -> torch.Tensor:
        """[R+1, D]: the frozen backbone's class-token embedding of every prompt row's condition (instances: their
        class's; the null row: the null class, or class 0 for a backbone without one)."""
        bb = self.backbone
        if self.params.condition == "instance":
            labels = torch.tensor(self.info.instance_labels, dtype=torch.long)
        else:
            labels = torch.arange(self.info.num_classes)
        null = bb.null_label if bb.null_label >= 0 else 0
        labels = torch.cat([labels, torch.tensor([null])]).to(bb.device)
        return bb.condition_embeddings(labels).to(self.prompts_device())

    def prompts_device(self) -> torch.device:
        return next(self.parameters()).device

    def prompts(self, rows: torch.Tensor) -> torch.Tensor:
        """Prompt tokens [B, S, D] of condition rows [B] (row ``self.rows`` = the null prompt)."""
        f = self.params.factorization
        if f == "none":
            out = self.table[rows]
        elif f == "additive":
            out = self.norm(self.cond_emb[rows][:, None, :] + self.pos_emb[None])
            if self.dense is not None:
                out = self.dense(out)
        else:
            out = torch.einsum("bf,fsd->bsd", self.cond_factors[rows], self.basis)
        return batch_dropout(self.drop, out)  # self.drop(out), sharing the global batch's masks across processes

    def _rows(self, labels: torch.Tensor, idx: Optional[torch.Tensor], drop: Optional[torch.Tensor]) -> torch.Tensor:
        if self.params.condition == "instance":
            if idx is None:
                raise ValueError("instance prompts need the training-sample indices")
            rows = idx.to(labels.device)
        else:
            rows = labels.clamp_max(self.rows)  # the backbone's null label maps to the null prompt
        if drop is not None:
            rows = torch.where(drop.to(rows.device), torch.full_like(rows, self.rows), rows)
        return rows

    def injections(self, labels, *, idx=None, drop=None) -> Injections:
        return Injections(prefix=self.prompts(self._rows(labels, idx, drop)),
                          replace_condition=self.params.replace_class_token, prefix_gate=self.gate)

    def _sampling_rows(self, labels: torch.Tensor) -> torch.Tensor:
        if self.params.condition == "class":
            return labels
        # class c -> the prompts of c's training images in turn (deterministic)
        inst = self.instance_labels.to(labels.device)
        rows = torch.empty_like(labels)
        for c in labels.unique().tolist():
            where = (labels == c).nonzero().view(-1)
            pool = (inst == c).nonzero().view(-1)
            if pool.numel() == 0:
                raise ValueError(f"no training instance of class {c} to take an instance prompt from")
            rows[where] = pool[torch.arange(where.numel(), device=labels.device) % pool.numel()]
        return rows

    def sampling_injections(self, labels: torch.Tensor) -> Injections:
        rows = self._sampling_rows(labels)
        null = torch.full_like(rows, self.rows)
        return Injections(prefix=self.prompts(rows), uncond_prefix=self.prompts(null),
                          replace_condition=self.params.replace_class_token, prefix_gate=self.gate)
