"""Sampling from a trained prompt configuration (``data/prompts/<name>/model.pt``).

:func:`load_prompted` rebuilds the frozen backbone named in the file (generator + tokenizer paths, checked against
their recorded sha256), re-applies the method (frame prompts, prefilled tokens, LoRA adapters, fine-tuned weights,
text projection) and loads the trained tensors strictly. :class:`PromptedSampler` has the sampler protocol of
``genvpt.sampling`` (``sample_images(labels, *, seed, batch_size, **kw) -> uint8 [N,3,H,W]``) plus
``sample_texts(texts, ...)`` for text-to-image configurations.

Class-conditional sampling goes through the generators' own :class:`genvpt.generators.Backbone` (same seeding, same
sampling defaults from params ``generator.var.sample``, same decoding and uint8 conversion as the frozen VAR's
row), with the prompts passed as VAR's ``input_offsets`` / ``prefix_embeds``; LoRA / fine-tuned weights live in the
backbone's VAR itself. Text-to-image sampling mirrors that loop with the projected text as ``cond_embeds``.

:func:`register` adds the sampler kind ``prompt`` to ``genvpt.sampling.SAMPLERS``: a sample configuration of that
kind names the prompt file as its ``generator`` (the backbone paths come from that file).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..checkpoint import CheckpointError, load_model_file
from ..io import sha256_file
from .mvp import PromptedVAR, build_prompted, to_uint8
from .params import PromptConfig
from .train import PROMPT_FAMILY

log = logging.getLogger(__name__)

__all__ = ["PromptedSampler", "load_prompted", "load_var_backbone", "register", "SAMPLER_KIND"]

SAMPLER_KIND = "prompt"


def load_var_backbone(generator: str | os.PathLike, tokenizer: str | os.PathLike, device: torch.device | str = "cpu"):
    """(VAR, multi-scale VQ-VAE) from model files (our own or official), via the generators' / tokenizers' loaders."""
    from ..generators import load_generator
    from ..tokenizers import load_tokenizer

    var = load_generator(generator, family="var", device=device)
    tok = load_tokenizer(tokenizer, family="msvq", device=device)
    return var, tok


def _default_sampling() -> dict:
    from ..generators import sample_settings
    from ..generators.params import GeneratorParams

    return sample_settings(GeneratorParams(), "var")


class PromptedSampler:
    """A trained prompt configuration ready to sample (class labels, or texts for text-to-image)."""

    def __init__(self, model: PromptedVAR, tokenizer: Any, *, sentences: Sequence[str], clip: Any = None,
                 sample_defaults: Optional[dict] = None, name: str = ""):
        from ..generators import Backbone

        self.model = model.eval()
        self.tokenizer = tokenizer.eval()
        self.sentences = list(sentences)
        self.clip = clip
        self.name = name
        self.backbone = Backbone("var", model.var, tokenizer, sample_defaults)

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def num_classes(self) -> int:
        return len(self.sentences) if self.model.text is not None else int(self.model.var.num_classes)

    @property
    def text_to_image(self) -> bool:
        return self.model.text is not None

    def to(self, device: torch.device | str) -> "PromptedSampler":
        self.model.to(device)
        self.tokenizer.to(device)
        if self.clip is not None:
            self.clip.to(device)
        return self

    def sample_images(self, labels: torch.Tensor, *, seed: int = 0, batch_size: int = 64, **kw: Any) -> torch.Tensor:
        """Class-conditional samples, uint8 [N,3,H,W]; a text-to-image configuration is conditioned on the class
        sentences ("a photo of {class}")."""
        labels = torch.as_tensor(labels, dtype=torch.long).view(-1)
        if self.text_to_image:
            return self.sample_texts([self.sentences[int(c)] for c in labels.tolist()], seed=seed,
                                     batch_size=batch_size, **kw)
        with torch.inference_mode():
            extra = self.model.var_kwargs()
        return self.backbone.sample_images(labels, seed=seed, batch_size=batch_size, **extra, **kw)

    def sample_texts(self, texts: Sequence[str], *, seed: int = 0, batch_size: int = 64, **kw: Any) -> torch.Tensor:
        """Text-to-image samples from free text, uint8 [N,3,H,W] (one generator seeded with ``seed``, as the
        backbone's class-conditional loop)."""
        if not self.text_to_image:
            raise RuntimeError(f"{self.name or 'this configuration'} is class-conditional; it cannot sample from text")
        if self.clip is None:
            raise RuntimeError("text-to-image sampling needs the CLIP text encoder (load_prompted(..., clip=...))")
        texts = list(texts)
        settings = {**self.backbone.sample_defaults, **kw}
        g = torch.Generator(device=self.device)
        g.manual_seed(int(seed))
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), max(1, int(batch_size))):
                emb = self.clip.encode_texts(texts[i:i + batch_size]).float().to(self.device)
                tokens = self.model.sample(None, tokenizer=self.tokenizer, generator=g, text_emb=emb, **settings)
                out.append(to_uint8(self.backbone.decode(tokens)).cpu())
        return torch.cat(out) if out else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def load_prompted(path: str | os.PathLike, *, device: torch.device | str = "cpu", clip: Any = None,
                  params: Any = None, generator: Optional[str] = None, tokenizer: Optional[str] = None,
                  check_hashes: bool = True) -> PromptedSampler:
    """Rebuild a trained configuration from ``path``. ``generator``/``tokenizer`` override the recorded backbone
    paths; the files must still hash as at training time (``check_hashes``). ``params``: the whole params (sampling
    defaults from ``generator.var.sample``, the CLIP of text-to-image files from ``clip``); ``clip``: an already
    loaded ClipModel."""
    config, sd, meta = load_model_file(path, PROMPT_FAMILY)
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
                                  f"retrain the prompt or pass check_hashes=False")
    var, tok = load_var_backbone(gen_path, tok_path, device=device)
    cfg = PromptConfig.model_validate(config["prompt_config"])
    if tuple(var.patch_nums) != tuple(config["patch_nums"]) or int(var.C) != int(config["C"]):
        raise CheckpointError(f"{path}: trained for VAR scales {config['patch_nums']} width {config['C']}, "
                              f"got {tuple(var.patch_nums)} width {var.C}")
    if cfg.text_to_image and clip is None:
        from ..clip import load_clip
        from ..config import load_params

        clip_params = (params if params is not None else load_params()).clip
        if src.get("clip"):
            clip_params = clip_params.model_copy(update={"pretrained": src["clip"]})
        clip = load_clip(clip_params, device=device)
    model = build_prompted(var, cfg, clip_dim=config.get("clip_dim")).to(device)
    model.load_adapter_state_dict(sd, source=str(path))
    defaults = None
    if params is not None and getattr(params, "generator", None) is not None:
        from ..generators import sample_settings

        defaults = sample_settings(params.generator, "var")
    log.info("loaded prompt configuration %s (%s) from %s", config.get("name"), cfg.method, path)
    return PromptedSampler(model, tok, sentences=config.get("sentences") or [], clip=clip,
                           sample_defaults=defaults if defaults is not None else _default_sampling(),
                           name=str(config.get("name", "")))


def _load_for_sampling(cfg: Any, device: torch.device, params: Any = None) -> PromptedSampler:
    """Loader for ``genvpt.sampling`` (kind ``prompt``): ``cfg.generator`` is the prompt file."""
    path = getattr(cfg, "generator", None)
    if not path:
        raise ValueError(f"config {getattr(cfg, 'name', '?')!r}: kind 'prompt' needs generator: data/prompts/<name>/model.pt")
    if not Path(path).is_file():
        raise FileNotFoundError(f"config {getattr(cfg, 'name', '?')!r}: prompt file {path} not found "
                                f"(run the train_prompt stage first)")
    return load_prompted(path, device=device, params=params)


def register() -> None:
    """Register sampler kind ``prompt`` with genvpt.sampling (idempotent)."""
    from .. import sampling

    if SAMPLER_KIND not in sampling.SAMPLERS:
        sampling.register_sampler(SAMPLER_KIND, _load_for_sampling)
