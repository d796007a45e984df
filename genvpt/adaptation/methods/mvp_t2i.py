"""MVP text-to-image (VAR-CLIP style): the L2-normalised CLIP text embedding goes through a Linear to VAR's width and
replaces the class embedding (start token and AdaLN condition, the backbone's ``cond_embeds`` injection); a learned
null text (in CLIP space, projected the same way) replaces dropped texts in training and is guidance's unconditional
branch when sampling. Frame prompts and the projection train. The projection starts as the least-squares map from the
class sentences' CLIP embeddings to VAR's class embeddings (and the empty text to the null class), so a class
sentence first conditions VAR as its class did. The class sentences' CLIP embeddings are kept with the trained file,
so class-conditional sampling needs no CLIP; free text does.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...backbones.base import Injections
from .mvp import MVP, MVPParams

__all__ = ["TextConditioner", "MVPT2IParams", "MVPT2I"]


class TextConditioner(nn.Module):
    """CLIP text embedding -> VAR condition (VAR-CLIP): ``proj(normalize(e))``; ``null`` [1, D] is the learned
    null text (dropped texts in training, the unconditional branch of guidance)."""

    def __init__(self, clip_dim: int, C: int):
        super().__init__()
        self.proj = nn.Linear(int(clip_dim), int(C))
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        self.null = nn.Parameter(torch.zeros(1, int(clip_dim)))

    def forward(self, text_emb: torch.Tensor, drop: Optional[torch.Tensor] = None) -> torch.Tensor:
        e = F.normalize(text_emb.float(), dim=-1)
        if drop is not None:
            e = torch.where(drop.view(-1, 1), self.null.expand_as(e), e)
        return self.proj(e)

    def null_condition(self, B: int) -> torch.Tensor:
        return self.proj(self.null).expand(B, -1)

    @torch.no_grad()
    def init_from_classes(self, class_text_emb: torch.Tensor, class_emb: torch.Tensor, null_text_emb: torch.Tensor,
                          null_class_emb: torch.Tensor, ridge: float = 1e-3) -> float:
        """Least-squares start: normalized class-sentence embeddings -> VAR's class embeddings, the empty text (the
        null's start) -> the null class. Returns the relative residual of the fit."""
        X = F.normalize(torch.cat([class_text_emb, null_text_emb]).float(), dim=-1)
        Y = torch.cat([class_emb, null_class_emb]).float()
        Xb = torch.cat([X, torch.ones(X.shape[0], 1)], dim=1)
        A = Xb.T @ Xb + ridge * torch.eye(Xb.shape[1])
        W = torch.linalg.solve(A, Xb.T @ Y)  # [D+1, C]
        self.proj.weight.copy_(W[:-1].T)
        self.proj.bias.copy_(W[-1])
        self.null.copy_(null_text_emb.float().view(1, -1))
        return float((Xb @ W - Y).norm() / Y.norm().clamp_min(1e-12))


class MVPT2IParams(MVPParams):
    first_scale: bool = True  # the first scale is prompted for text-to-image (Table 6)
    text: Literal["caption", "sentence"] = "caption"  # the text that conditions a training image
    init: Literal["classes", "random"] = "classes"


class MVPT2I(MVP):
    name = "mvp_t2i"
    Params = MVPT2IParams

    @classmethod
    def required_features(cls, params) -> set[str]:
        return super().required_features(params) | {"cond_embeds"}

    @classmethod
    def needs_clip(cls, params) -> bool:
        return True

    @classmethod
    def needs_captions(cls, params) -> bool:
        return params.lambda_cap > 0 or params.text == "caption"

    def __init__(self, params, backbone, info, *, seed: int = 0):
        super().__init__(params, backbone, info, seed=seed)
        if info.clip_dim is None:
            raise ValueError("text-to-image needs the CLIP text embedding width (clip_dim)")
        self.text = TextConditioner(info.clip_dim, backbone.width)
        self.register_buffer("class_text_emb", torch.zeros(max(1, info.num_classes), info.clip_dim))
        self.to(backbone.device)

    @property
    def replaces_condition(self) -> bool:
        return True

    @torch.no_grad()
    def setup(self, ctx) -> None:
        self.class_text_emb.copy_(ctx.sentence_emb.to(self.class_text_emb.device))
        self._train_text = (ctx.caption_emb[ctx.caption_ids.to(ctx.caption_emb.device)]
                            if self.params.text == "caption" else None)
        if self.params.init == "classes":
            var = self.backbone.generator
            dev = self.class_text_emb.device
            ce = var.class_emb(torch.arange(self.info.num_classes, device=dev))
            ne = var.class_emb(torch.tensor([var.num_classes], device=dev))
            null_text = ctx.encode_texts([""]).to(dev)
            self.text.to("cpu")
            self.text.init_from_classes(self.class_text_emb.cpu(), ce.cpu(), null_text.cpu(), ne.cpu())
            self.text.to(dev)

    def injections(self, labels, *, idx=None, drop=None) -> Injections:
        if self.params.text == "caption":
            emb = self._train_text[idx.to(self._train_text.device)]
        else:
            emb = self.class_text_emb[labels.clamp_max(self.info.num_classes - 1)]
        return Injections(input_offsets=self.offsets(), cond_embeds=self.text(emb, drop))

    def text_injections(self, text_emb: torch.Tensor) -> Injections:
        return Injections(input_offsets=self.offsets(), cond_embeds=self.text(text_emb),
                          null_embeds=self.text.null_condition(1))

    def sampling_injections(self, labels) -> Injections:
        return self.text_injections(self.class_text_emb[labels])
