"""Frozen image generators (the backbones prompts adapt) and the pairing with their tokenizer.

* ``load_generator(path)``: a generator file written by this project (``save_generator``; family from the file), or
  an official checkpoint (taming GPT / valeoai MaskGIT / VAR), whose family and sizes are read from its keys.
* ``load_pretrained(family, path, **hints)``: an official checkpoint, strictly; a file of another family or of
  another size than ``hints`` ask for fails with a message naming both.
* ``load_backbone(family, generator_path, tokenizer_path)`` -> :class:`Backbone` with
  ``sample_images(labels, *, seed, batch_size, **kw) -> uint8 [N, 3, H, W]``.
"""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..checkpoint import CheckpointError, load_file, save_model, strict_load
from .ar import GPT, ARConfig
from .common import pick_device, sampling
from .maskgit import MaskGIT, MaskGITConfig
from .orders import ORDERS, Order, order_indices
from .params import FAMILIES, GeneratorParams
from .var import VAR, VARConfig, build_var_config

log = logging.getLogger(__name__)

__all__ = [
    "FAMILIES",
    "GPT",
    "ARConfig",
    "MaskGIT",
    "MaskGITConfig",
    "VAR",
    "VARConfig",
    "build_var_config",
    "ORDERS",
    "Order",
    "order_indices",
    "Backbone",
    "save_generator",
    "load_generator",
    "load_pretrained",
    "detect_family",
    "load_backbone",
    "sample_settings",
    "TOKENIZER_OF",
]

TOKENIZER_OF = {"ar": "vqgan", "maskgit": "vqgan", "var": "msvq"}
_CLASSES = {"ar": (GPT, ARConfig), "maskgit": (MaskGIT, MaskGITConfig), "var": (VAR, VARConfig)}


def save_generator(path: str | os.PathLike, model: nn.Module, **meta: Any) -> Path:
    """Save one of our generators (family + config + weights), atomically."""
    return save_model(path, model, model.family, model.cfg.to_dict(), **meta)


# ---------------------------------------------------------------------------------------------------- official files
def _official_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """Unwrap the known containers: VAR training ``['trainer']['var_wo_ddp']``, valeoai ``model_state_dict``,
    Lightning ``state_dict`` (taming: keep ``transformer.*``), or a plain state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get("trainer"), Mapping) and "var_wo_ddp" in obj["trainer"]:
        obj = obj["trainer"]["var_wo_ddp"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("model_state_dict"), Mapping):
        obj = obj["model_state_dict"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (looked for trainer/var_wo_ddp, model_state_dict, state_dict)")
    sd = dict(obj)
    if any(k.startswith("transformer.tok_emb") for k in sd):  # taming Net2NetTransformer checkpoint
        sd = {k[len("transformer."):]: v for k, v in sd.items() if k.startswith("transformer.")}
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    return sd


def detect_family(sd: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Family of a generator state dict from its key names (None if none fits)."""
    if "pos_1LC" in sd and "word_embed.weight" in sd:
        return "var"
    if "first_layer.0.weight" in sd and any(".fn.mha.in_proj_weight" in k for k in sd):
        return "maskgit"
    if "tok_emb.weight" in sd and any(re.match(r"blocks\.\d+\.attn\.key\.weight", k) for k in sd):
        return "ar"
    return None


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    ids = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(ids) + 1 if ids else 0


def _infer_var(sd, hints: dict) -> VARConfig:
    C, Cvae = sd["word_embed.weight"].shape
    depth = _count(sd, r"blocks\.(\d+)\.")
    heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1] if "blocks.0.attn.scale_mul_1H11" in sd else hints.get("num_heads") or C // 64
    L = sd["pos_1LC"].shape[1]
    if "lvl_1L" in sd:
        counts = torch.bincount(sd["lvl_1L"].view(-1).long()).tolist()
        patch_nums = tuple(int(round(math.sqrt(c))) for c in counts)
    else:
        patch_nums = tuple(hints.get("patch_nums") or ())
    if sum(p * p for p in patch_nums) != L:
        raise CheckpointError(f"cannot infer VAR patch_nums: pos_1LC holds {L} positions but patch_nums {patch_nums} give "
                              f"{sum(p * p for p in patch_nums)}; pass patch_nums")
    return VARConfig(
        vocab_size=sd["head.weight"].shape[0], Cvae=Cvae, num_classes=sd["class_emb.weight"].shape[0] - 1, depth=depth,
        embed_dim=None if C == 64 * depth else C, num_heads=None if heads == depth else heads,
        mlp_ratio=sd["blocks.0.ffn.fc1.weight"].shape[0] / C, attn_l2_norm="blocks.0.attn.scale_mul_1H11" in sd,
        shared_aln="shared_ada_lin.1.weight" in sd, patch_nums=patch_nums, drop_path_rate=0.0,
    )


def _infer_maskgit(sd, hints: dict) -> MaskGITConfig:
    rows, D = sd["tok_emb.weight"].shape
    n1 = sd["pos_emb"].shape[1]
    grid = int(round(math.sqrt(n1 - 1)))
    V = hints.get("vocab_size")
    nc = hints.get("num_classes")
    if V is None and nc is None:
        V = 1024  # the valeoai / taming f16-1024 codebook
    if V is None:
        V = rows - 2 - nc
    nc = rows - 2 - V
    if nc < 0:
        raise CheckpointError(f"MaskGIT tok_emb has {rows} rows, too few for a codebook of {V}")
    return MaskGITConfig(vocab_size=V, grid=grid, num_classes=nc, hidden_dim=D, depth=_count(sd, r"transformer\.layers\.(\d+)\."),
                         heads=hints.get("heads") or 16, mlp_dim=sd["transformer.layers.0.1.fn.net.0.weight"].shape[0], dropout=0.0)


def _infer_ar(sd, hints: dict) -> ARConfig:
    rows, C = sd["tok_emb.weight"].shape
    head_rows = sd["head.weight"].shape[0]
    block = sd["pos_emb"].shape[1]
    layout = "taming" if rows == head_rows else "separate"
    if layout == "taming":
        grid = hints.get("grid") or int(round(math.sqrt(block)))
        nc = hints.get("num_classes") or min(1000, head_rows)  # classes share the code table
    else:
        grid = int(round(math.sqrt(block)))
        nc = rows - head_rows - 1
    return ARConfig(vocab_size=head_rows, grid=grid, num_classes=nc, n_layer=_count(sd, r"blocks\.(\d+)\."),
                    n_head=hints.get("n_head") or 16, n_embd=C, order=hints.get("order", "row_major"), token_layout=layout,
                    block_size=block)


_INFER = {"ar": _infer_ar, "maskgit": _infer_maskgit, "var": _infer_var}

# hints that describe the SIZE of a model: a file that disagrees is the wrong size
_SIZE_KEYS = {
    "ar": ("n_layer", "n_embd", "vocab_size"),
    "maskgit": ("depth", "hidden_dim", "vocab_size", "num_classes"),
    "var": ("depth", "vocab_size", "num_classes", "Cvae"),
}


def load_pretrained(family: str, path: str | os.PathLike, **hints: Any) -> nn.Module:
    """Load an official checkpoint of ``family`` strictly, sizes read from its shapes.

    ``hints`` give what shapes cannot tell (``n_head``/``heads``, ``order``, MaskGIT ``vocab_size``, VAR
    ``patch_nums`` when the file lacks ``lvl_1L``) and optionally the size you expect (e.g. ``depth=16``):
    a file of another family or size raises :class:`CheckpointError` naming what it holds.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown generator family {family!r}; allowed: {', '.join(FAMILIES)}")
    sd = _official_state_dict(load_file(path), str(path))
    found = detect_family(sd)
    if found is None:
        raise CheckpointError(f"{path} does not look like a generator checkpoint (first keys: {list(sd)[:5]})")
    if found != family:
        raise CheckpointError(f"{path} holds a {found!r} generator checkpoint, but a {family!r} model was asked for")
    cfg = _INFER[family](sd, hints)
    wrong = [(k, hints[k], getattr(cfg, k)) for k in _SIZE_KEYS[family] if hints.get(k) is not None and hints[k] != getattr(cfg, k)]
    if wrong:
        desc = ", ".join(f"{k}={have}" for k, _, have in wrong)
        want = ", ".join(f"{k}={w}" for k, w, _ in wrong)
        raise CheckpointError(f"{path} holds a {family} model of another size ({desc}) than asked for ({want})")
    model = _CLASSES[family][0](cfg)
    strict_load(model, sd, source=str(path))
    log.info("loaded official %s checkpoint %s (%d parameters)", family, path, sum(p.numel() for p in model.parameters()))
    return model.eval()


def load_generator(path: str | os.PathLike, *, family: Optional[str] = None, device: str | torch.device = "cpu", **hints: Any) -> nn.Module:
    """Load a generator: our own file (family from the file; ``family`` if given must match) or an official one."""
    obj = load_file(path)
    if isinstance(obj, Mapping) and "family" in obj and "state_dict" in obj and "config" in obj:
        fam = obj["family"]
        if fam not in _CLASSES:
            raise CheckpointError(f"{path} holds a {fam!r} model, not a generator ({', '.join(FAMILIES)})")
        if family is not None and fam != family:
            raise CheckpointError(f"{path} holds a {fam!r} generator, but a {family!r} generator was asked for")
        model_cls, cfg_cls = _CLASSES[fam]
        try:
            cfg = cfg_cls(**dict(obj["config"]))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: invalid {fam} config: {err}") from None
        model = model_cls(cfg)
        strict_load(model, obj["state_dict"], source=str(path))
        model.meta = dict(obj.get("meta", {}))
        return model.to(device).eval()
    sd = _official_state_dict(obj, str(path))
    fam = detect_family(sd)
    if fam is None:
        raise CheckpointError(f"{path} is neither a genvpt generator file nor a known official generator checkpoint")
    return load_pretrained(family or fam, path, **hints).to(device)


# ---------------------------------------------------------------------------------------------------- backbone
def sample_settings(gp: GeneratorParams, family: str) -> dict:
    """The sampling keyword arguments params give ``family``."""
    return gp.family(family).sample.model_dump()


class Backbone:
    """A frozen generator with its tokenizer: labels -> tokens -> images."""

    def __init__(self, family: str, generator: nn.Module, tokenizer: nn.Module, sample_defaults: Optional[dict] = None):
        if family not in FAMILIES:
            raise ValueError(f"unknown generator family {family!r}; allowed: {', '.join(FAMILIES)}")
        if generator.family != family:
            raise CheckpointError(f"the generator is a {generator.family!r} model, not {family!r}")
        self.family, self.generator, self.tokenizer = family, generator.eval(), tokenizer.eval()
        self.sample_defaults = dict(sample_defaults or {})
        self._check_pairing()

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def num_classes(self) -> int:
        return self.generator.cfg.num_classes

    def _check_pairing(self) -> None:
        g, t = self.generator.cfg, self.tokenizer
        vocab = getattr(t, "vocab_size", None) or getattr(t, "n_embed", None)
        if vocab is not None and vocab != g.vocab_size:
            raise CheckpointError(f"{self.family} generator predicts {g.vocab_size} codes but the tokenizer has {vocab}")
        if self.family == "var":
            if tuple(getattr(t, "patch_nums", ())) != tuple(g.patch_nums):
                raise CheckpointError(f"VAR scales {g.patch_nums} differ from the tokenizer's {getattr(t, 'patch_nums', None)}")
            if getattr(t, "Cvae", g.Cvae) != g.Cvae:
                raise CheckpointError(f"VAR expects Cvae {g.Cvae}, the tokenizer has {t.Cvae}")

    @sampling
    def sample_tokens(self, labels: torch.Tensor, *, generator: torch.Generator, **kw: Any):
        kw = {**self.sample_defaults, **kw}
        labels = labels.to(self.device)
        if self.family == "var":
            return self.generator.sample(labels, tokenizer=self.tokenizer, generator=generator, **kw)
        return self.generator.sample(labels, generator=generator, **kw)

    @sampling
    def decode(self, tokens) -> torch.Tensor:
        """Tokens (a grid [B, h, w] or VAR's list of scales) -> images in [-1, 1]."""
        if self.family == "var":
            return self.tokenizer.idxBl_to_img(list(tokens), same_shape=True, last_one=True)
        return self.tokenizer.decode_indices(tokens)

    @sampling
    def sample_images(self, labels: torch.Tensor, *, seed: int = 0, batch_size: int = 64, progress: bool = False, **kw: Any) -> torch.Tensor:
        """uint8 images [N, 3, H, W] for ``labels`` [N], drawn in batches from one generator seeded with ``seed``."""
        from tqdm import tqdm

        labels = torch.as_tensor(labels, dtype=torch.long).view(-1)
        g = torch.Generator(device=self.device)
        g.manual_seed(int(seed))
        out = []
        for i in tqdm(range(0, labels.shape[0], batch_size), desc=f"sample {self.family}", disable=not progress, leave=False):
            tok = self.sample_tokens(labels[i:i + batch_size], generator=g, **kw)
            img = self.decode(tok)
            out.append(img.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu())
        return torch.cat(out) if out else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def load_backbone(
    family: str,
    generator_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    sample_defaults: Optional[dict] = None,
    params: Optional[GeneratorParams] = None,
    **hints: Any,
) -> Backbone:
    """Pair a generator file with its tokenizer file.

    ``sample_defaults`` (the keyword arguments ``sample_images`` uses unless told otherwise) default to
    ``generator.<family>.sample`` of ``params`` (a :class:`GeneratorParams`), else of params.yaml
    (``$GENVPT_PARAMS`` or ./params.yaml) when it exists, else the built-in defaults.
    """
    from ..tokenizers import load_tokenizer

    dev = pick_device(device)
    gen = load_generator(generator_path, family=family, device=dev, **hints).requires_grad_(False)
    tok = load_tokenizer(tokenizer_path, family=TOKENIZER_OF[family], device=dev)
    if sample_defaults is None:
        sample_defaults = sample_settings(params if params is not None else _params_from_file(), family)
    return Backbone(family, gen, tok, sample_defaults)


def _params_from_file() -> GeneratorParams:
    from ..config import DEFAULT_PARAMS, load_params

    path = os.environ.get("GENVPT_PARAMS", DEFAULT_PARAMS)
    if not Path(path).is_file():
        return GeneratorParams()
    return load_params(path).generator
