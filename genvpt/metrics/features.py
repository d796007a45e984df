"""CLIP image features for scoring, and the torch-fidelity feature extractor that exposes them.

``ClipFeatureExtractor`` is registered in torch-fidelity's registry as ``genvpt-clip``; ``calculate_metrics(...,
feature_extractor="genvpt-clip", genvpt_clip=model)`` then computes FID/KID/IS/PRC formulas on our CLIP's image
embeddings. It provides two features:

* ``clip``   -- the L2-normalised image embedding [B, D] (FD, KD, precision/recall);
* ``logits`` -- zero-shot class logits ``logit_scale * cos(image, text_c)`` over the class prompts passed as
  ``genvpt_class_texts`` [B, C] (IS; the Inception-Score formula needs class probabilities).

The CLIP object only needs the ``genvpt.clip.ClipModel`` protocol: ``encode_images(uint8 [B,3,H,W]) -> [B, D]``
(normalised), ``encode_texts(list[str]) -> [T, D]`` and ``logit_scale``.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

log = logging.getLogger(__name__)

__all__ = [
    "CLIP_EXTRACTOR",
    "ClipFeatureExtractor",
    "TensorImages",
    "clip_device",
    "clip_logit_scale",
    "encode_images",
    "encode_texts",
]

CLIP_EXTRACTOR = "genvpt-clip"


class TensorImages(Dataset):
    """uint8 [N,3,H,W] images as the Dataset torch-fidelity expects (one uint8 [3,H,W] tensor per item)."""

    def __init__(self, images: torch.Tensor):
        if not (torch.is_tensor(images) and images.dtype == torch.uint8 and images.dim() == 4 and images.shape[1] == 3):
            raise ValueError(f"expected uint8 images [N,3,H,W], got {getattr(images, 'dtype', type(images))} "
                             f"{tuple(getattr(images, 'shape', ()))}")
        self.images = images.cpu()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def clip_device(clip: Any) -> torch.device:
    dev = getattr(clip, "device", None)
    if isinstance(dev, (str, torch.device)):
        return torch.device(dev)
    if isinstance(clip, torch.nn.Module):
        p = next(clip.parameters(), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def clip_logit_scale(clip: Any) -> float:
    """The multiplier applied to cosine similarities: ``ClipModel.logit_scale`` is already exponentiated (exp of
    open_clip's learnable log-scale parameter); 100 when the object has none."""
    s = getattr(clip, "logit_scale", None)
    if s is None:
        return 100.0
    return float(s.detach().float().mean()) if torch.is_tensor(s) else float(s)


@torch.inference_mode()
def encode_images(clip: Any, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Normalised CLIP image embeddings [N, D] (float32, CPU) of uint8 images, in batches."""
    dev = clip_device(clip)
    out = []
    for i in range(0, images.shape[0], batch_size):
        f = clip.encode_images(images[i:i + batch_size].to(dev))
        out.append(F.normalize(f.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.inference_mode()
def encode_texts(clip: Any, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Normalised CLIP text embeddings [T, D] (float32, CPU); identical texts are encoded once."""
    uniq = list(dict.fromkeys(texts))
    feats = []
    for i in range(0, len(uniq), batch_size):
        f = clip.encode_texts(list(uniq[i:i + batch_size]))
        feats.append(F.normalize(f.float(), dim=-1).cpu())
    table = torch.cat(feats)
    index = {t: k for k, t in enumerate(uniq)}
    return table[torch.tensor([index[t] for t in texts], dtype=torch.long)]


class ClipFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor over genvpt's CLIP image encoder (registered as ``genvpt-clip``).

    Keyword arguments (passed through ``torch_fidelity.calculate_metrics``):
      ``genvpt_clip``         the CLIP object (required);
      ``genvpt_class_texts``  class prompts for the ``logits`` feature (required for IS);
      ``genvpt_feature_sink`` optional list; every batch's features are appended to it (so the caller can reuse
                              them for CLIP score, diversity and the probe without encoding twice).
    The CLIP object is held outside the module tree: torch-fidelity's ``.cuda()``/``.eval()`` calls do not touch it;
    inputs are moved to the CLIP's own device.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        genvpt_clip: Any = None,
        genvpt_class_texts: Optional[Sequence[str]] = None,
        genvpt_feature_sink: Optional[list] = None,
        **kwargs: Any,
    ):
        super().__init__(name, features_list)
        if genvpt_clip is None:
            raise ValueError(f"feature extractor {name!r} needs the CLIP model: pass genvpt_clip=<ClipModel>")
        object.__setattr__(self, "_clip", genvpt_clip)
        self._sink = genvpt_feature_sink
        self._batch_size = int(kwargs.get("batch_size", 256))
        text_feats = None
        if "logits" in features_list:
            if not genvpt_class_texts:
                raise ValueError("the 'logits' feature (IS-CLIP) needs class prompts: pass genvpt_class_texts=[...]")
            text_feats = encode_texts(genvpt_clip, list(genvpt_class_texts))
        self.register_buffer("text_feats", text_feats if text_feats is not None else torch.empty(0), persistent=False)
        self.scale = clip_logit_scale(genvpt_clip)

    @staticmethod
    def get_provided_features_list():
        return ("clip", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "clip", "kid": "clip", "prc": "clip"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"expecting uint8 images [B,3,H,W], got {x.dtype} {tuple(x.shape)}")
        feats = encode_images(self._clip, x, self._batch_size)
        out = {"clip": feats}
        if "logits" in self.features_list:
            out["logits"] = self.scale * feats @ self.text_feats.cpu().T
        if self._sink is not None:
            self._sink.append(feats)
        dev = x.device
        return tuple(out[name].to(dev) for name in self.features_list)


if CLIP_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(CLIP_EXTRACTOR, ClipFeatureExtractor)
