"""CLIP score: how well samples match their conditioning text.

Definition used everywhere in genvpt: ``clip_score = mean_i  w * max(cos(E_img(x_i), E_txt(t_i)), 0)`` with
``w = 100`` by default (torchmetrics' scale; note torchmetrics clamps the *mean*, we clamp per sample as
Hessel et al. do) or ``w = 2.5`` (Hessel et al. 2021). Embeddings come from the project's CLIP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["clip_score_from_embeddings"]


def clip_score_from_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor, weight: float = 100.0) -> float:
    """``mean(weight * max(cos(image_i, text_i), 0))`` for paired rows of ``image_emb`` [N,D] and ``text_emb`` [N,D]."""
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image and text embeddings must be paired: {tuple(image_emb.shape)} vs {tuple(text_emb.shape)}")
    cos = F.cosine_similarity(image_emb.double(), text_emb.double(), dim=-1)
    return float((weight * cos.clamp(min=0)).mean())
