"""CLIP for genvpt: one wrapper around open_clip used by MVP's loss and by scoring.

* :func:`load_clip` builds any open_clip model name (built-in, or a config shipped in ``genvpt/clip/configs``,
  registered with ``open_clip.add_model_config``) and loads weights from a local file named in params:
  our own ``pretrain_clip`` output (``save_model`` format, family ``open_clip``) or an open_clip / OpenAI state dict.
* :class:`ClipModel` takes images as uint8 [B,3,H,W] or float in [-1, 1] (the generators' range), resizes
  (short side + centre crop, as CLIP's preprocessing does) and normalises *in torch*, so
  :meth:`ClipModel.encode_images` is differentiable w.r.t. the input images (MVP backpropagates through it);
  :meth:`ClipModel.embed_images` / :meth:`ClipModel.embed_texts` are the batched ``inference_mode`` versions for scoring.

QuickGELU pitfall (../shared/reference/ecosystem.md section 5): OpenAI's weights were trained with QuickGELU.
open_clip only checks this for pretrained *tags*; a weights *file* loaded into ``ViT-B-32`` (GELU) loads without
complaint and gives wrong embeddings. ``clip.quick_gelu`` (params) forces it; when unset we decide from the model
name (``*-quickgelu``) and warn whenever a foreign weights file is loaded without an explicit choice.
"""
from __future__ import annotations

import argparse
import logging
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import (
    CheckpointError,
    load_file,
    load_model_file,
    save_model,
    strict_load,
)
from .params import DEFAULT_CLIP_PATH, ClipParams
from ..training import resolve_device as _resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "CLIP_FAMILY",
    "CONFIG_DIR",
    "ClipModel",
    "ClipWeightsError",
    "QuickGeluWarning",
    "register_configs",
    "is_own_config",
    "resolve_device",
    "build_clip",
    "load_clip",
    "save_clip",
    "is_torchscript_file",
    "convert_torchscript",
]

CLIP_FAMILY = "open_clip"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_REGISTERED = False


class ClipWeightsError(CheckpointError):
    """The CLIP weights named in params are missing or unusable; the message says how to provide them."""


class QuickGeluWarning(UserWarning):
    """A CLIP weights file is loaded without an explicit QuickGELU choice."""


def is_own_config(name: str) -> bool:
    """True for the models genvpt pretrains itself (a config in genvpt/clip/configs)."""
    return (CONFIG_DIR / f"{name}.json").is_file()


def register_configs() -> None:
    """Register genvpt/clip/configs/*.json with open_clip and genvpt's vision towers with timm (idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        import open_clip

        from .towers import register_towers

        register_towers()  # timm names the configs' vision towers refer to
        open_clip.add_model_config(CONFIG_DIR)
        _REGISTERED = True


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    return _resolve_device(device, "clip.device")


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """True for a TorchScript archive (OpenAI's original CLIP release format), which weights_only loading refuses."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def convert_torchscript(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert an OpenAI TorchScript CLIP file to a plain safetensors state dict (one explicit, trusted step:
    ``torch.jit.load`` runs the archive's TorchScript code). Load the result with ``clip.quick_gelu: true``."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    module = torch.jit.load(str(src), map_location="cpu")
    sd = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    for k in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(k, None)
    with atomic_path(dst) as tmp:
        save_file(sd, str(tmp))
    return Path(dst)


# ---------------------------------------------------------------------------------------------------------------
class ClipModel(nn.Module):
    """An open_clip model plus its tokenizer and preprocessing, as differentiable torch functions.

    ``encode_images(images)`` / ``encode_texts(texts)`` return L2-normalised features [B, D] and keep the autograd
    graph (call them inside ``torch.no_grad()`` / ``inference_mode()`` when no gradient is needed);
    ``logit_scale`` is the (exponentiated) temperature CLIP's contrastive loss multiplies similarities by.
    """

    def __init__(self, model: nn.Module, tokenizer, name: str, quick_gelu: bool, batch_size: int = 256):
        super().__init__()
        import open_clip

        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.model_cfg: dict = {}  # the open_clip config the model was built from (set by build_clip)
        self.quick_gelu = bool(quick_gelu)
        self.batch_size = int(batch_size)
        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", getattr(model.visual, "image_size", 224))
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[assignment]
        self.interpolation = "bilinear" if pp.get("interpolation") == "bilinear" else "bicubic"
        self.resize_mode = pp.get("resize_mode", "shortest")
        self.register_buffer("mean", torch.tensor(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pp.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1), persistent=False)

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.visual.parameters()).dtype

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if getattr(self.model, "text_projection", None) is not None else int(
            self.model.visual.output_dim
        )

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def freeze(self) -> "ClipModel":
        """Eval mode, no parameter gradients (the input images can still receive gradients)."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    # -- images -----------------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0,255] or float [-1,1] images [B,3,H,W] -> the model's normalised input (differentiable)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B,3,H,W], got {tuple(images.shape)}")
        x = images.to(self.device)
        x = x.float().div(255.0) if x.dtype == torch.uint8 else (x.float() + 1.0) * 0.5
        x = self._resize(x)
        x = (x - self.mean) / self.std
        return x.to(self.dtype)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        th, tw = self.image_size
        h, w = x.shape[-2:]
        if (h, w) == (th, tw):
            return x
        if self.resize_mode == "squash":
            nh, nw = th, tw
        else:  # 'shortest' (CLIP's default): short side to size, then centre crop; 'longest' is treated alike
            scale = max(th / h, tw / w)
            nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode=self.interpolation, align_corners=False, antialias=(nh < h or nw < w))
        top, left = (nh - th) // 2, (nw - tw) // 2
        return x[..., top : top + th, left : left + tw].clamp(0.0, 1.0)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image features [B, D] (float32); differentiable w.r.t. ``images`` outside inference_mode."""
        return self.model.encode_image(self.preprocess(images), normalize=True).float()

    # -- texts ------------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a list of strings, not one string")
        return self.tokenizer(list(texts)).to(self.device)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text features [B, D] (float32)."""
        return self.model.encode_text(self.tokenize(texts), normalize=True).float()

    def forward(self, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image features, text features, logit scale): the arguments of open_clip's ``ClipLoss``."""
        return self.encode_images(images), self.encode_texts(texts), self.logit_scale

    # -- batched inference (scoring) --------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_images(self, images: torch.Tensor, batch_size: Optional[int] = None, progress: bool = False) -> torch.Tensor:
        """Features of many images, in batches, on CPU as float32 [N, D]."""
        bs = batch_size or self.batch_size
        chunks = range(0, images.shape[0], bs)
        if progress:
            from tqdm import tqdm

            chunks = tqdm(chunks, desc="clip images", unit="batch", leave=False)
        out = [self.encode_images(images[i : i + bs]).cpu() for i in chunks]
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: Optional[int] = None) -> torch.Tensor:
        bs = batch_size or self.batch_size
        texts = list(texts)
        out = [self.encode_texts(texts[i : i + bs]).cpu() for i in range(0, len(texts), bs)]
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    @torch.inference_mode()
    def class_embeddings(self, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """Zero-shot classifier [C, D]: per class, the normalised mean of its template embeddings."""
        texts = [t.format(class_name=c) for c in class_names for t in templates]
        emb = self.embed_texts(texts).view(len(class_names), len(templates), -1).mean(1)
        return F.normalize(emb, dim=-1)

    @torch.inference_mode()
    def zero_shot_predict(self, images: torch.Tensor, class_emb: torch.Tensor, batch_size: Optional[int] = None) -> torch.Tensor:
        feats = self.embed_images(images, batch_size)
        return (feats @ class_emb.T).argmax(-1)

    def zero_shot_accuracy(
        self, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], templates: Sequence[str],
        batch_size: Optional[int] = None,
    ) -> float:
        pred = self.zero_shot_predict(images, self.class_embeddings(class_names, templates), batch_size)
        return float((pred == labels.cpu()).float().mean())


# ---------------------------------------------------------------------------------------------------------------
def _model_cfg(name: str) -> dict[str, Any]:
    import open_clip

    register_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(
            f"unknown open_clip model {name!r}; built-in names: see open_clip.list_models(); "
            f"genvpt's own configs: {sorted(p.stem for p in CONFIG_DIR.glob('*.json'))}"
        )
    return cfg


def build_clip(
    name: str,
    *,
    quick_gelu: bool = False,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    model_cfg: Optional[Mapping[str, Any]] = None,
    batch_size: int = 256,
) -> ClipModel:
    """A randomly initialised open_clip model ``name`` (``model_cfg`` overrides its registered config)."""
    import open_clip

    base = _model_cfg(name)
    overrides = {k: v for k, v in dict(model_cfg or {}).items() if k != "custom_text"}
    if quick_gelu:
        overrides["quick_gelu"] = True
    dev = resolve_device(device)
    prev = logging.getLogger().level
    logging.getLogger().setLevel(max(prev, logging.ERROR))  # open_clip logs "initialized randomly" at WARNING
    try:
        model = open_clip.create_model(name, pretrained=None, precision=precision, device=dev, **overrides)
        ctx = dict(base.get("text_cfg", {}), **dict(overrides.get("text_cfg", {}))).get("context_length")
        tokenizer = open_clip.get_tokenizer(name, context_length=ctx)
    finally:
        logging.getLogger().setLevel(prev)
    merged = {**base, **overrides}  # create_model's own rule: top-level keys of the overrides win
    merged.pop("custom_text", None)
    clip = ClipModel(model, tokenizer, name, bool(merged.get("quick_gelu", False)), batch_size=batch_size)
    clip.model_cfg = merged
    return clip


def save_clip(path: str | os.PathLike, clip: ClipModel, **meta: Any) -> Path:
    """Save as a genvpt model file: the open_clip name and full config travel with the weights."""
    cfg = dict(getattr(clip, "model_cfg", None) or _model_cfg(clip.name))
    cfg["quick_gelu"] = clip.quick_gelu
    cfg.pop("custom_text", None)
    return save_model(path, clip.model, CLIP_FAMILY, {"name": clip.name, "model_cfg": cfg}, **meta)


def _missing_weights_message(params: ClipParams, path: Path) -> str:
    if params.pretrained == DEFAULT_CLIP_PATH or is_own_config(params.model):
        how = (
            "train the embedded default's CLIP first with the pretrain_clip stage "
            "(`dvc repro pretrain_clip` or `python -m stages.pretrain_clip`), or point clip.pretrained at a weights file"
        )
    else:
        how = (
            f"download the open_clip weights for {params.model} on a machine with network access (e.g. the "
            f"open_clip_pytorch_model.bin / .safetensors file of its Hugging Face repo, or OpenAI's release converted "
            f"with `python -m genvpt.clip convert-torchscript IN OUT`), copy it here and set clip.pretrained to its path"
        )
    return f"CLIP weights not found: clip.pretrained = {str(path)!r} (model {params.model!r}). To provide them: {how}."


def _auto_quick_gelu(params: ClipParams, path: Path) -> bool:
    cfg = _model_cfg(params.model)
    name_says = bool(cfg.get("quick_gelu", False))
    if params.quick_gelu is not None:
        if params.quick_gelu != name_says:
            log.info("clip.quick_gelu=%s overrides model %s's default (quick_gelu=%s)", params.quick_gelu, params.model, name_says)
        return params.quick_gelu
    if not name_says:
        warnings.warn(
            f"clip.quick_gelu is unset, so {params.model} is built with GELU for weights file {path}. That is right for "
            f"LAION/DataComp weights but silently wrong for OpenAI's (trained with QuickGELU): set clip.quick_gelu: true "
            f"or use {params.model}-quickgelu for OpenAI weights, or clip.quick_gelu: false to silence this warning.",
            QuickGeluWarning,
            stacklevel=3,
        )
    return name_says


def load_clip(params: ClipParams | None = None, *, device: str | torch.device | None = None, freeze: bool = True) -> ClipModel:
    """The CLIP named by the ``clip`` params section, frozen (eval, no parameter grads) unless ``freeze=False``."""
    params = params or ClipParams()
    dev = resolve_device(device if device is not None else params.device)
    path = Path(params.pretrained)
    if not path.is_file():
        raise ClipWeightsError(_missing_weights_message(params, path))
    if is_torchscript_file(path):
        raise ClipWeightsError(
            f"{path} is a TorchScript archive (OpenAI's original CLIP format), which cannot be loaded with "
            f"weights_only=True. Convert it once: `python -m genvpt.clip convert-torchscript {path} {path.with_suffix('.safetensors')}` "
            f"and set clip.pretrained to the .safetensors file and clip.quick_gelu: true."
        )
    obj = load_file(path)  # weights_only torch.load or safetensors
    if isinstance(obj, Mapping) and "family" in obj and "state_dict" in obj:  # a genvpt model file (pretrain_clip)
        cfg, sd, meta = load_model_file(path, CLIP_FAMILY)
        name, model_cfg = cfg["name"], dict(cfg["model_cfg"])
        if name != params.model:
            raise ClipWeightsError(f"{path} holds open_clip model {name!r}, but clip.model is {params.model!r}")
        if params.quick_gelu is not None and params.quick_gelu != bool(model_cfg.get("quick_gelu", False)):
            log.warning("clip.quick_gelu=%s ignored: %s was trained with quick_gelu=%s", params.quick_gelu, path, model_cfg.get("quick_gelu"))
        clip = build_clip(name, device="cpu", precision="fp32", model_cfg=model_cfg, batch_size=params.batch_size)
    else:
        quick = _auto_quick_gelu(params, path)
        clip = build_clip(params.model, quick_gelu=quick, device="cpu", precision="fp32", batch_size=params.batch_size)
        sd = _massage_open_clip_state_dict(clip.model, _unwrap_state_dict(obj, path))
    strict_load(clip.model, sd, source=str(path))  # lists missing / unexpected / mis-shaped / mis-typed keys
    clip = _to_device_precision(clip, dev, params.precision)
    log.info("loaded CLIP %s (quick_gelu=%s) from %s on %s", clip.name, clip.quick_gelu, path, dev)
    return clip.freeze() if freeze else clip


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """open_clip's accepted layouts: a state dict, ``{"state_dict": ...}``, keys prefixed with ``module.``."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ClipWeightsError(f"{path} holds no CLIP state dict (expected a mapping of parameter names to tensors)")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def _massage_open_clip_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same format fixes open_clip's load_checkpoint applies (3rd-party layouts, scalar logit_scale)."""
    from open_clip.factory import convert_state_dict

    sd = convert_state_dict(model, dict(sd))
    if "logit_scale" in sd and sd["logit_scale"].ndim != model.logit_scale.ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
    if getattr(model, "logit_bias", None) is None:
        sd.pop("logit_bias", None)
    return sd


def _to_device_precision(clip: ClipModel, device: torch.device, precision: str) -> ClipModel:
    clip = clip.to(device)
    if precision in ("fp16", "bf16"):
        if device.type != "cuda":
            log.warning("clip.precision=%s on %s: keeping fp32", precision, device)
        else:
            clip.model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    return clip


# ---------------------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m genvpt.clip convert-torchscript IN OUT``."""
    ap = argparse.ArgumentParser(prog="python -m genvpt.clip")
    sub = ap.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("convert-torchscript", help="OpenAI TorchScript CLIP .pt -> safetensors state dict")
    conv.add_argument("src")
    conv.add_argument("dst")
    args = ap.parse_args(argv)
    if args.cmd == "convert-torchscript":
        out = convert_torchscript(args.src, args.dst)
        logging.basicConfig(level=logging.INFO)
        log.info("wrote %s (load it with clip.quick_gelu: true)", out)


if __name__ == "__main__":
    main()
