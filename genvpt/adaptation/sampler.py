"""Sampling from a trained adaptation (``data/adapted/<name>/seed-<s>/model.pt``).

:func:`load_adapted` rebuilds the frozen backbone the file names (generator + tokenizer paths, checked against their
recorded sha256), rebuilds the method from the stored configuration and loads the trained state strictly.
:class:`AdaptedSampler` has the sampler protocol of ``genvpt.sampling`` (``sample_images(labels, *, seed,
batch_size, **kw) -> uint8 [N,3,H,W]``) for every backbone and method, plus ``sample_texts`` for methods that
condition on text. The sampling loop is the backbone's own (same seeding, defaults, decoding and uint8 conversion as
the frozen rows); the method only supplies injections.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..backbones import Backbone, load_backbone, to_uint8
from ..checkpoint import CheckpointError, load_model_file
from ..io import sha256_file
from .method import Method, MethodInfo
from .params import AdaptationConfig, TrainSettings
from .train import ADAPTED_FAMILY, build_method

log = logging.getLogger(__name__)

__all__ = ["AdaptedSampler", "load_adapted", "SAMPLER_KIND", "register"]

SAMPLER_KIND = "adapted"


class AdaptedSampler:
    """A trained adaptation ready to sample (class labels; texts where the method conditions on text)."""

    def __init__(self, backbone: Backbone, method: Method, *, clip: Any = None, name: str = ""):
        self.backbone = backbone
        self.method = method.eval()
        self.clip = clip
        self.name = name
        self.generator = backbone.generator  # the networks, for parameter counts
        self.tokenizer = backbone.tokenizer

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def sentences(self) -> list[str]:
        return list(self.method.info.sentences)

    @property
    def num_classes(self) -> int:
        return int(self.method.info.num_classes)

    @property
    def text_to_image(self) -> bool:
        return hasattr(self.method, "text_injections")

    def to(self, device: torch.device | str) -> "AdaptedSampler":
        self.backbone.to(device)
        self.method.to(device)
        if self.clip is not None:
            self.clip.to(device)
        return self

    def sample_images(self, labels: torch.Tensor, *, seed: int = 0, batch_size: int = 64, **kw: Any) -> torch.Tensor:
        """Class-conditional samples, uint8 [N, 3, H, W]."""
        with torch.inference_mode():
            return self.backbone.sample_images(labels, seed=seed, batch_size=batch_size,
                                               injections=self.method.sampling_injections, **kw)

    def sample_texts(self, texts: Sequence[str], *, seed: int = 0, batch_size: int = 64, **kw: Any) -> torch.Tensor:
        """Samples conditioned on free text, uint8 [N, 3, H, W] (one generator seeded with ``seed``)."""
        if not self.text_to_image:
            raise RuntimeError(f"{self.name or 'this configuration'} is class-conditional; it cannot sample from text")
        if self.clip is None:
            raise RuntimeError("sampling from free text needs the CLIP text encoder (load_adapted(..., clip=...))")
        texts = list(texts)
        settings = {**self.backbone.sample_defaults, **kw}
        g = torch.Generator(device=self.device)
        g.manual_seed(int(seed))
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), max(1, int(batch_size))):
                emb = self.clip.encode_texts(texts[i:i + batch_size]).float().to(self.device)
                inj = self.method.text_injections(emb)
                tokens = self.backbone.sample_tokens(None, inj, generator=g, **settings)
                out.append(to_uint8(self.backbone.decode(tokens)).cpu())
        return torch.cat(out) if out else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def load_adapted(path: str | os.PathLike, *, device: torch.device | str = "cpu", sample_defaults: Optional[dict] = None,
                 clip: Any = None, generator: Optional[str] = None, tokenizer: Optional[str] = None,
                 check_hashes: bool = True) -> AdaptedSampler:
    """Rebuild a trained adaptation from ``path``. ``generator`` / ``tokenizer`` override the recorded backbone
    paths; the files must still hash as at training time (``check_hashes``). ``sample_defaults``: the backbone's
    sampling settings (params ``generator.<family>.sample``). ``clip``: a loaded CLIP for free-text sampling."""
    config, sd, meta = load_model_file(path, ADAPTED_FAMILY)
    src = dict(config.get("source") or {})
    gen_path = generator or src.get("generator")
    tok_path = tokenizer or src.get("tokenizer")
    if not gen_path or not tok_path:
        raise CheckpointError(f"{path} does not name its backbone; pass generator= and tokenizer=")
    for what, p, key in (("generator", gen_path, "generator_sha256"), ("tokenizer", tok_path, "tokenizer_sha256")):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{path}: its {what} {p} is missing")
        if check_hashes and src.get(key) and sha256_file(p) != src[key]:
            raise CheckpointError(f"{path} was trained on another {what}: {p} has changed since (sha256 differs); "
                                  f"retrain or pass check_hashes=False")
    from .method import method_class

    mcls = method_class(config["method"])
    cfg = AdaptationConfig(name=config["name"], backbone=config["backbone"], tokenizer=config["tokenizer"],
                           method=config["method"], train=TrainSettings.model_validate(config["train"]),
                           options=mcls.Params.model_validate(config["options"]))
    backbone = load_backbone(cfg.backbone, gen_path, tok_path, device=device, sample_defaults=sample_defaults,
                             **dict(src.get("hints") or {}))
    info = MethodInfo(**config["info"])
    method = build_method(cfg, backbone, info, int(config.get("seed", 0))).to(device)
    method.load_adapter_state_dict(sd, source=str(path))
    method.eval()
    backbone.generator.eval()
    log.info("loaded adaptation %s (%s on %s, seed %s) from %s", cfg.name, cfg.method, cfg.backbone,
             config.get("seed"), path)
    return AdaptedSampler(backbone, method, clip=clip, name=cfg.name)


def _load_for_sampling(cfg: Any, device: torch.device, params: Any = None) -> AdaptedSampler:
    """Loader for ``genvpt.sampling`` (kind ``adapted``): ``cfg.generator`` is the adapted model file."""
    path = getattr(cfg, "generator", None)
    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"config {getattr(cfg, 'name', '?')!r}: adapted model file {path} not found "
                                f"(run the adapt stage first)")
    defaults = None
    config, _, _ = load_model_file(path, ADAPTED_FAMILY)
    gp = getattr(params, "generator", None)
    if gp is not None:
        from ..generators import sample_settings

        defaults = sample_settings(gp, config["backbone"])
    return load_adapted(path, device=device, sample_defaults=defaults)


def register() -> None:
    """Register sampler kind ``adapted`` with genvpt.sampling (idempotent)."""
    from .. import sampling

    if SAMPLER_KIND not in sampling.SAMPLERS:
        sampling.register_sampler(SAMPLER_KIND, _load_for_sampling)
