"""Frozen image generators (the backbones prompts adapt) and the pairing with their tokenizer.

* ``load_generator(path)``: a generator file written by this project (``save_generator``; family from the file), or
  an official checkpoint (taming GPT / valeoai MaskGIT v1 or v2 / VAR), whose family and sizes are read from its keys.
* ``load_pretrained(family, path, **hints)``: an official checkpoint, strictly; a file of another family or of
  another size than ``hints`` ask for fails with a message naming both.
* ``detect_family(sd)`` / ``detect_layout(sd)``: the family of a state dict, and its layout within the family
  (MaskGIT: ``"v1"`` = valeoai Maskgit-pytorch v1.0, ``"v2"`` = Halton-MaskGIT, the repository's head since 2025).
* ``load_backbone(family, generator_path, tokenizer_path)`` -> :class:`Backbone` with
  ``sample_images(labels, *, seed, batch_size, **kw) -> uint8 [N, 3, H, W]``.

What weights cannot tell is never guessed: attention head counts (taming GPT ``n_head``, MaskGIT ``heads``) come from
hints (params ``generator.ar.n_head`` / ``generator.maskgit.heads``) or, for taming, from the project config taming
writes beside its checkpoint (``<run>/configs/*-project.yaml`` next to ``<run>/checkpoints/last.ckpt``); without
either, loading fails with a message naming what to pass.
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

from ..checkpoint import CheckpointError, CheckpointMismatch, load_file, save_model, strict_load
from .ar import GPT, ARConfig
from .common import pick_device, sampling
from .maskgit import MaskGIT, MaskGITConfig
from .maskgit_halton import MaskGITv2, MaskGITv2Config
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
    "MaskGITv2",
    "MaskGITv2Config",
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
    "detect_layout",
    "taming_project_config",
    "load_backbone",
    "sample_settings",
    "TOKENIZER_OF",
]

TOKENIZER_OF = {"ar": "vqgan", "maskgit": "vqgan", "var": "msvq"}
_CLASSES = {"ar": (GPT, ARConfig), "maskgit": (MaskGIT, MaskGITConfig), "var": (VAR, VARConfig)}
_LAYOUT_CLASSES = {("maskgit", "v2"): (MaskGITv2, MaskGITv2Config)}
_LAYOUT_NAMES = {
    ("maskgit", "v1"): "valeoai Maskgit-pytorch v1.0 (MaskTransformer) layout",
    ("maskgit", "v2"): "valeoai Halton-MaskGIT v2 layout",
}


def _classes(family: str, layout: Optional[str] = None) -> tuple[type, type]:
    return _LAYOUT_CLASSES.get((family, layout), _CLASSES[family])


def _describe(family: str, layout: Optional[str]) -> str:
    name = _LAYOUT_NAMES.get((family, layout))
    return f"{family} ({name})" if name else family


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
    return {_strip_wrappers(k): v for k, v in sd.items()}


def _strip_wrappers(key: str) -> str:
    """Drop leading DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes (in any nesting)."""
    while True:
        for p in ("module.", "_orig_mod."):
            if key.startswith(p):
                key = key[len(p):]
                break
        else:
            return key


def detect_family(sd: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Family of a generator state dict from its key names (None if none fits)."""
    if "pos_1LC" in sd and "word_embed.weight" in sd:
        return "var"
    if detect_layout(sd) is not None:
        return "maskgit"
    if "tok_emb.weight" in sd and any(re.match(r"blocks\.\d+\.attn\.key\.weight", k) for k in sd):
        return "ar"
    return None


def detect_layout(sd: Mapping[str, torch.Tensor]) -> Optional[str]:
    """MaskGIT layout of a state dict from its key names: ``"v1"`` (valeoai Maskgit-pytorch v1.0: ``first_layer``,
    packed ``fn.mha.in_proj_weight``, class token in ``tok_emb``), ``"v2"`` (Halton-MaskGIT: ``cls_emb``,
    ``attn.wq``, adaLN ``last_norm``), or None (not a MaskGIT)."""
    if "first_layer.0.weight" in sd and any(".fn.mha.in_proj_weight" in k for k in sd):
        return "v1"
    if ("cls_emb.weight" in sd and "tok_emb.weight" in sd and "pos_emb.weight" in sd
            and any(re.match(r"transformer\.layers\.\d+\.attn\.wq\.weight", k) for k in sd)):
        return "v2"
    return None


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    ids = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(ids) + 1 if ids else 0


def _infer_var(sd, hints: dict, path: str = "") -> VARConfig:
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


def _need_heads(hints: dict, path: str, what: str, known: str) -> int:
    heads = hints.get("heads")
    if heads is None:
        raise CheckpointError(
            f"{path}: {what} - the attention head count cannot be read from the weights and the checkpoint ships no "
            f"config; pass heads= (params: generator.maskgit.heads). {known}")
    return int(heads)


def _infer_maskgit(sd, hints: dict, path: str = ""):
    if detect_layout(sd) == "v2":
        return _infer_maskgit_v2(sd, hints, path)
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
        raise CheckpointError(f"MaskGIT v1 tok_emb has {rows} rows, too few for a codebook of {V}")
    heads = _need_heads(hints, path, "MaskGIT v1 (valeoai Maskgit-pytorch v1.0 layout)",
                        "The released MaskGIT_ImageNet_256.pth / _512.pth use 16 heads (their README).")
    return MaskGITConfig(vocab_size=V, grid=grid, num_classes=nc, hidden_dim=D, depth=_count(sd, r"transformer\.layers\.(\d+)\."),
                         heads=heads, mlp_dim=sd["transformer.layers.0.1.fn.net.0.weight"].shape[0], dropout=0.0)


def _infer_maskgit_v2(sd, hints: dict, path: str = "") -> MaskGITv2Config:
    what = "MaskGIT v2 (valeoai Halton-MaskGIT layout)"
    if "in_proj.weight" in sd or "out_proj.weight" in sd:
        raise CheckpointError(f"{path}: {what} with token projection (proj > 1: in_proj/out_proj) is not supported; "
                              f"only proj = 1 (the released ImageNet_384_large.pth) loads")
    rows, D = sd["tok_emb.weight"].shape
    n = sd["pos_emb.weight"].shape[0]
    grid = int(round(math.sqrt(n)))
    if grid * grid != n:
        raise CheckpointError(f"{path}: {what} pos_emb holds {n} positions, not a square token grid")
    w1 = next((v for k, v in sd.items() if re.match(r"transformer\.layers\.0\.ff\.w1\.weight$", k)), None)
    if w1 is None:
        raise CheckpointError(f"{path}: {what} lacks transformer.layers.0.ff.w1.weight (its SwiGLU width)")
    heads = _need_heads(hints, path, what,
                        "The released ImageNet_384_large.pth uses 16 heads; the official sizes are tiny 384/6, "
                        "small 512/6, base 768/12, large 1024/16, xlarge 1152/16 (hidden_dim/heads).")
    if D % heads:
        raise CheckpointError(f"{path}: {what} hidden_dim {D} is not divisible by heads={heads}")
    return MaskGITv2Config(
        vocab_size=rows - 1, grid=grid, num_classes=sd["cls_emb.weight"].shape[0] - 1, hidden_dim=D,
        depth=_count(sd, r"transformer\.layers\.(\d+)\."), heads=heads, mlp_dim=None, ff_dim=int(w1.shape[0]),
        register=int(sd["reg_tokens.weight"].shape[0]) if "reg_tokens.weight" in sd else 0, dropout=0.0,
    )


# taming's Net2NetTransformer permuters -> our orders (orders.py); Identity is taming's default when none is set
_TAMING_PERMUTERS = {"Identity": "row_major", "AlternateParsing": "alternate", "SpiralOut": "spiral_out",
                     "SpiralIn": "spiral_in", "ZCurve": "z_curve", "Subsample": "subsample", "Random": "random"}


def _merge(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def taming_project_config(path: str | os.PathLike) -> tuple[Optional[dict], list[Path]]:
    """The project config taming's ``main.py`` writes for the run of checkpoint ``path``, or (None, []).

    taming keeps ``<run>/checkpoints/last.ckpt`` and ``<run>/configs/<time>-project.yaml`` (one per start of the run);
    a ``*project.yaml`` beside the checkpoint or in a ``configs/`` folder beside it also counts. Several files are
    merged in name (time) order, later ones winning, as taming's sampling scripts do. Read with ``yaml.safe_load``.
    """
    import yaml

    ckpt = Path(path)
    for d in (ckpt.parent, ckpt.parent / "configs", ckpt.parent.parent / "configs"):
        files = sorted(d.glob("*project.yaml")) if d.is_dir() else []
        if not files:
            continue
        merged: dict = {}
        for f in files:
            try:
                doc = yaml.safe_load(f.read_text())
            except (OSError, yaml.YAMLError) as err:
                raise CheckpointError(f"cannot read taming project config {f}: {err}") from err
            if not isinstance(doc, Mapping):
                raise CheckpointError(f"taming project config {f} is not a mapping")
            merged = _merge(merged, doc)
        return merged, files
    return None, []


def _dig(doc: Optional[Mapping], *keys: str) -> Any:
    for k in keys:
        if not isinstance(doc, Mapping) or k not in doc:
            return None
        doc = doc[k]
    return doc


def _infer_ar(sd, hints: dict, path: str = "") -> ARConfig:
    rows, C = sd["tok_emb.weight"].shape
    head_rows = sd["head.weight"].shape[0]
    block = sd["pos_emb"].shape[1]
    n_layer = _count(sd, r"blocks\.(\d+)\.")
    layout = "taming" if rows == head_rows else "separate"
    project, files = taming_project_config(path) if path else (None, [])
    src = ", ".join(str(f) for f in files)
    tc = _dig(project, "model", "params", "transformer_config", "params") or {}
    if project is not None:
        have = {"n_layer": n_layer, "n_embd": C, "vocab_size": head_rows, "block_size": block}
        bad = [f"{k}={tc[k]} (weights: {v})" for k, v in have.items() if tc.get(k) is not None and int(tc[k]) != v]
        if bad:
            raise CheckpointError(f"{path}: the taming project config {src} describes another transformer: {', '.join(bad)}")

    n_head = hints.get("n_head")
    cfg_head = tc.get("n_head")
    if n_head is not None and cfg_head is not None and int(n_head) != int(cfg_head):
        raise CheckpointError(f"{path}: n_head={n_head} was asked for, but the taming project config {src} says "
                              f"n_head={cfg_head}; set generator.ar.n_head (or n_head=) to {cfg_head}")
    if n_head is None and cfg_head is not None:
        n_head = int(cfg_head)
        log.info("%s: n_head=%d read from the taming project config %s", path, n_head, src)
    if n_head is None:
        raise CheckpointError(
            f"{path}: the GPT's n_head cannot be read from its weights (query/key/value are [n_embd, n_embd] for any "
            f"head count) and no taming project config (configs/*-project.yaml) lies beside it; pass n_head= "
            f"(params: generator.ar.n_head) or put the run's project config beside the checkpoint")
    if C % int(n_head):
        raise CheckpointError(f"{path}: n_embd {C} is not divisible by n_head={n_head}")

    order = hints.get("order")
    perm = _dig(project, "model", "params", "permuter_config", "target")
    if project is not None:
        name = "Identity" if perm is None else str(perm).rsplit(".", 1)[-1]
        cfg_order = _TAMING_PERMUTERS.get(name)
        if cfg_order is None and order is None:
            raise CheckpointError(f"{path}: the taming project config {src} names permuter {perm!r}, which genvpt does "
                                  f"not know ({', '.join(_TAMING_PERMUTERS)}); pass order=")
        if cfg_order is not None and order is not None and order != cfg_order:
            raise CheckpointError(f"{path}: order={order!r} was asked for, but the taming project config {src} uses "
                                  f"permuter {name} (order {cfg_order!r}); set generator.ar.order to {cfg_order!r}")
        order = order or cfg_order

    if layout == "taming":
        grid = hints.get("grid") or int(round(math.sqrt(block)))
        nc = hints.get("num_classes")
        if nc is None and project is not None:
            cond = _dig(project, "model", "params", "cond_stage_config")
            target = str(_dig(cond, "target") or "")
            if target.endswith("SOSProvider"):
                nc = 0
            elif _dig(cond, "params", "n_classes") is not None:
                nc = int(_dig(cond, "params", "n_classes"))
        if nc is None:
            nc = min(1000, head_rows)  # classes share the code table
    else:
        grid = int(round(math.sqrt(block)))
        nc = rows - head_rows - 1
    return ARConfig(vocab_size=head_rows, grid=grid, num_classes=nc, n_layer=n_layer, n_head=int(n_head), n_embd=C,
                    order=order or "row_major", token_layout=layout, block_size=block)


_INFER = {"ar": _infer_ar, "maskgit": _infer_maskgit, "var": _infer_var}

# the keys each family's sizes are read from (before a model can be built to compare every key against)
_SIZE_SOURCES = {
    ("ar", None): ("tok_emb.weight", "head.weight", "pos_emb"),
    ("maskgit", "v1"): ("tok_emb.weight", "pos_emb", "transformer.layers.0.1.fn.net.0.weight"),
    ("maskgit", "v2"): ("tok_emb.weight", "pos_emb.weight", "cls_emb.weight"),
    ("var", None): ("word_embed.weight", "head.weight", "class_emb.weight", "pos_1LC", "blocks.0.ffn.fc1.weight"),
}


def _infer_config(family: str, layout: Optional[str], sd: dict[str, torch.Tensor], hints: dict, path: str, what: str):
    """The config of ``sd``'s model; keys the sizes are read from that are missing or of the wrong rank raise
    :class:`CheckpointMismatch` naming them (never a bare KeyError)."""
    need = _SIZE_SOURCES.get((family, layout), ())
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointMismatch(f"{path} ({what})", missing, [], [],
                                 note="keys the model's sizes are read from are missing")
    try:
        return _INFER[family](sd, hints, path)
    except KeyError as err:
        raise CheckpointMismatch(f"{path} ({what})", [str(err.args[0]) if err.args else str(err)], [], [],
                                 note="keys the model's sizes are read from are missing") from None
    except (ValueError, IndexError, TypeError, ZeroDivisionError) as err:
        shapes = ", ".join(f"{k}: {tuple(sd[k].shape)}" for k in need if k in sd)
        raise CheckpointError(f"{path}: cannot read the {what} model's sizes from its weights ({err}); "
                              f"shapes: {shapes}") from None

# hints that describe the SIZE of a model: a file that disagrees is the wrong size
_SIZE_KEYS = {
    "ar": ("n_layer", "n_embd", "vocab_size"),
    "maskgit": ("depth", "hidden_dim", "vocab_size", "num_classes"),
    "var": ("depth", "vocab_size", "num_classes", "Cvae"),
}


def load_pretrained(family: str, path: str | os.PathLike, **hints: Any) -> nn.Module:
    """Load an official checkpoint of ``family`` strictly, sizes read from its shapes.

    ``hints`` give what shapes cannot tell (``n_head``/``heads``, ``order``, MaskGIT v1 ``vocab_size``, VAR
    ``patch_nums`` when the file lacks ``lvl_1L``) and optionally the size you expect (e.g. ``depth=16``):
    a file of another family or size raises :class:`CheckpointError` naming what it holds. A taming GPT's
    ``n_head`` (and ``order``, ``num_classes``) may instead come from the run's ``configs/*-project.yaml``
    beside the checkpoint (:func:`taming_project_config`); a hint that contradicts it is an error.
    MaskGIT files are v1 or v2 (``detect_layout``); the model's ``cfg.layout`` says which was loaded.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown generator family {family!r}; allowed: {', '.join(FAMILIES)}")
    return _load_official(family, _official_state_dict(load_file(path), str(path)), str(path), hints)


def _load_official(family: str, sd: dict[str, torch.Tensor], path: str, hints: Mapping[str, Any]) -> nn.Module:
    hints = dict(hints)
    found = detect_family(sd)
    if found is None:
        raise CheckpointError(f"{path} does not look like a generator checkpoint (first keys: {list(sd)[:5]})")
    layout = detect_layout(sd) if found == "maskgit" else None
    what = _describe(found, layout)
    if found != family:
        name = _LAYOUT_NAMES.get((found, layout))
        raise CheckpointError(f"{path} holds a {found!r} generator checkpoint{f' ({name})' if name else ''}, "
                              f"but a {family!r} model was asked for")
    cfg = _infer_config(family, layout, sd, hints, path, what)
    wrong = [(k, hints[k], getattr(cfg, k)) for k in _SIZE_KEYS[family] if hints.get(k) is not None and hints[k] != getattr(cfg, k)]
    if wrong:
        desc = ", ".join(f"{k}={have}" for k, _, have in wrong)
        want = ", ".join(f"{k}={w}" for k, w, _ in wrong)
        raise CheckpointError(f"{path} holds a {what} model of another size ({desc}) than asked for ({want})")
    model = _classes(family, layout)[0](cfg)
    strict_load(model, sd, source=f"{path} ({what})")
    log.info("loaded official %s checkpoint %s (%d parameters)", what, path, sum(p.numel() for p in model.parameters()))
    return model.eval()


def load_generator(path: str | os.PathLike, *, family: Optional[str] = None, device: str | torch.device = "cpu", **hints: Any) -> nn.Module:
    """Load a generator: our own file (family from the file; ``family`` if given must match) or an official one.
    A MaskGIT model's ``cfg.layout`` (``"v1"`` / ``"v2"``) tells which network it is."""
    obj = load_file(path)
    if isinstance(obj, Mapping) and "family" in obj and "state_dict" in obj and "config" in obj:
        fam = obj["family"]
        if fam not in _CLASSES:
            raise CheckpointError(f"{path} holds a {fam!r} model, not a generator ({', '.join(FAMILIES)})")
        if family is not None and fam != family:
            raise CheckpointError(f"{path} holds a {fam!r} generator, but a {family!r} generator was asked for")
        config = dict(obj["config"])
        model_cls, cfg_cls = _classes(fam, config.get("layout"))
        try:
            cfg = cfg_cls(**config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: invalid {fam} config: {err}") from None
        model = model_cls(cfg)
        strict_load(model, obj["state_dict"], source=str(path))
        model.meta = dict(obj.get("meta", {}))
        return model.to(device).eval()
    sd = _official_state_dict(obj, str(path))
    fam = detect_family(sd)
    if fam is None:
        raise CheckpointError(f"{path} is neither a genvpt generator file nor a known official generator checkpoint "
                              f"(taming GPT, valeoai MaskGIT v1 or v2 / Halton-MaskGIT, VAR); first keys: {list(sd)[:5]}")
    target = family or fam
    if target not in FAMILIES:
        raise ValueError(f"unknown generator family {target!r}; allowed: {', '.join(FAMILIES)}")
    return _load_official(target, sd, str(path), hints).to(device)


# ---------------------------------------------------------------------------------------------------- backbone
def sample_settings(gp: GeneratorParams, family: str) -> dict:
    """The sampling keyword arguments params give ``family``."""
    return gp.family(family).sample.model_dump()


def Backbone(family: str, generator: nn.Module, tokenizer: nn.Module, sample_defaults: Optional[dict] = None):
    """A frozen generator with its tokenizer, as the registered backbone class of ``family``
    (genvpt/backbones: labels -> tokens -> images, training losses with injections)."""
    from ..backbones import backbone_class

    return backbone_class(family)(generator, tokenizer, sample_defaults)


def load_backbone(
    family: str,
    generator_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    sample_defaults: Optional[dict] = None,
    params: Optional[GeneratorParams] = None,
    **hints: Any,
):
    """Pair a generator file with its tokenizer file (see ``genvpt.backbones.load_backbone``).

    ``sample_defaults`` (the keyword arguments ``sample_images`` uses unless told otherwise) default to
    ``generator.<family>.sample`` of ``params`` when given, else to the sampler's own defaults. Nothing is read
    from ./params.yaml: library calls take their settings explicitly.
    """
    from ..backbones import load_backbone as _load

    if sample_defaults is None and params is not None:
        sample_defaults = sample_settings(params, family)
    return _load(family, generator_path, tokenizer_path, device=device, sample_defaults=sample_defaults, **hints)
