"""Prompt inversion (PGN paper, "Prompt inversion for input-space prompting"): train in token space, deploy in RGB.

The mapping. CLIP's patch embedding ``conv1`` has no bias (one that has is subtracted from ``p`` first) and a P x P
kernel with stride P, so the token of an input patch ``x`` (normalised pixels, flattened in (channel, row, column)
order) is ``W x`` with ``W`` the conv weight as a
``D x 3P^2`` matrix; the model then adds the positional embedding ``e_s`` of the slot ``s`` the patch sits in, and
``ln_pre`` normalises every token on its own. For a generated prompt token ``p`` (which the token-space model uses
as is: no position embedding, then ``ln_pre``) we place the patch

    x = W^+ (p - e_s)                        (W^+ the Moore-Penrose pseudo-inverse, computed once in float64)

so that the model's own path gives ``W x + e_s = p`` whenever ``p - e_s`` lies in the range of ``W``: always when
``W`` has full row rank ``D`` (ViT-B/32: 768 x 3072 and the tiny ViT: 128 x 192, both measured full rank at random
init; ViT-B/16's 768 x 768 is square: check ``PatchInverse.rank``). Subtracted: the slot's positional embedding and
conv1's bias when it has one (open_clip's has none); the class token is not involved. When ``W`` is rank-deficient
(ViT-L/14: 1024 x 588) the residual ``(I - W W^+)(p - e_s)`` is lost; as ``ln_pre`` removes each token's mean,
``ln_invariant=True`` then solves ``min ||W x + c 1 - (p - e_s)||`` over ``x`` and a constant ``c`` (the constant
costs nothing after ``ln_pre``), which never does worse after ``ln_pre`` than the plain pseudo-inverse.
:func:`inversion_report` measures what is left in every case.

The placement (``placement``):

* ``append`` (the paper's: the inverted patches "attached to the bottom of the incoming image"): the canvas grows by
  ``K / gw`` patch rows below the image (K must fill whole rows of the ``gw``-wide patch grid, as the paper keeps
  K divisible). The image patches keep their own positional embeddings; the appended slots get ``append_pos``
  (zeros by default: they then carry no position, exactly like the token prompts), so ``e_s`` is that. In raster
  order the appended slots come after every image patch, in prompt order, so the sequence the transformer sees is
  token for token the token-space one ([cls, patches, prompts]). Chosen over interpolating the positional
  embedding to the taller grid because interpolation moves every *image* token's position (a shift the prompts
  were never trained with) while the prompts' own slots would still need a subtraction. The cost: the deployed
  ViT must accept a taller input whose extra slots add ``append_pos`` (:func:`genvpt.classify.vit.forward_canvas`);
  its weights and every other step are unchanged.
* ``replace``: for a model whose input size and forward pass cannot change at all, the inverted patches overwrite K
  patch slots of the image (default: the last K in raster order, the bottom rows), with ``e_s`` those slots'
  positional embeddings. The transformer has no attention mask, so the class token's output does not depend on
  where the prompts sit: the only difference to the token-space model is that the K overwritten image patches are
  gone (``top1_tokens_dropped`` in the report isolates that loss).

Pixels: ``x`` is in the model's normalised input space; as an image it is ``x * std + mean``, which can fall outside
[0, 1]. The report scores the unclamped patches, the patches clamped to [0, 1], and clamped and quantised to uint8
(what an image file can carry), each against the token prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .augment import eval_inputs
from .data import ClassifyData
from .vit import check_vit, forward_canvas, patch_tokens, run_tokens

__all__ = ["PatchInverse", "patch_inverse", "invert_tokens", "embed_patches", "place_append", "place_replace",
           "default_replace_slots", "to_rgb", "from_rgb", "pixel_mode", "rgb_prompted_features",
           "inversion_report"]

Placement = Literal["append", "replace"]


@dataclass
class PatchInverse:
    """``weight`` ``W`` [D, 3P^2] and its pseudo-inverses (float64), the rank of ``W``, the patch size and conv1's
    bias ``b`` [D] (zeros when it has none, as open_clip's)."""

    weight: torch.Tensor
    pinv: torch.Tensor
    pinv_ln: torch.Tensor  # pseudo-inverse of [W, 1] (the ln_pre-invariant solve); its last row is the constant
    rank: int
    patch: tuple[int, int]
    bias: torch.Tensor

    @property
    def width(self) -> int:
        return int(self.weight.shape[0])

    @property
    def full_rank(self) -> bool:
        """Every token lies in conv1's range (``W`` has full row rank)."""
        return self.rank == self.width


def patch_inverse(visual: nn.Module) -> PatchInverse:
    """The pseudo-inverse of the tower's patch embedding (computed once; the tower is frozen)."""
    check_vit(visual)
    w = visual.conv1.weight.detach().double().cpu()
    D = w.shape[0]
    W = w.reshape(D, -1)
    rank = int(torch.linalg.matrix_rank(W))
    ones = torch.ones(D, 1, dtype=W.dtype)
    b = visual.conv1.bias
    bias = b.detach().double().cpu() if b is not None else torch.zeros(D, dtype=W.dtype)
    return PatchInverse(W, torch.linalg.pinv(W), torch.linalg.pinv(torch.cat([W, ones], dim=1)), rank,
                        tuple(int(p) for p in w.shape[-2:]), bias)


def invert_tokens(inv: PatchInverse, tokens: torch.Tensor, slot_pos: Optional[torch.Tensor] = None, *,
                  ln_invariant: bool = True) -> torch.Tensor:
    """Patches ``[B, K, 3, P, P]`` (normalised input space, float32) whose tokens, once the model adds ``slot_pos``
    (``[K, D]`` or ``[B, K, D]``; None: nothing added), equal ``tokens`` ``[B, K, D]`` (up to a per-token constant
    when ``ln_invariant`` and ``W`` is rank-deficient)."""
    t = tokens.detach().double().cpu() - inv.bias
    if slot_pos is not None:
        t = t - slot_pos.detach().double().cpu()
    if ln_invariant and not inv.full_rank:
        x = (t @ inv.pinv_ln.T)[..., :-1]
    else:
        x = t @ inv.pinv.T
    P, Q = inv.patch
    return x.float().reshape(*tokens.shape[:-1], 3, P, Q).to(tokens.device)


def embed_patches(visual: nn.Module, patches: torch.Tensor) -> torch.Tensor:
    """conv1 of patches ``[B, K, 3, P, P]`` -> tokens ``[B, K, D]`` (its bias, if any; no positional embedding)."""
    B, K = patches.shape[:2]
    w = visual.conv1.weight
    out = F.conv2d(patches.reshape(B * K, *patches.shape[2:]).to(w.dtype), w, visual.conv1.bias,
                   stride=visual.conv1.stride)
    return out.reshape(B, K, -1)


def _grid(visual: nn.Module) -> tuple[int, int]:
    return int(visual.grid_size[0]), int(visual.grid_size[1])


def place_append(images: torch.Tensor, patches: torch.Tensor, grid_width: int) -> torch.Tensor:
    """The canvas ``[B, 3, H + (K / gw) * P, W]``: the image with the K patches appended below it as whole rows,
    in raster order (patch k at row ``gh + k // gw``, column ``k % gw``)."""
    B, K, C, P, Q = patches.shape
    if K % grid_width:
        raise ValueError(f"append placement needs K a multiple of the patch grid's width {grid_width} (got K={K}); "
                         f"use placement 'replace' or K in {[grid_width * i for i in range(1, 5)]}")
    rows = K // grid_width
    band = patches.reshape(B, rows, grid_width, C, P, Q).permute(0, 3, 1, 4, 2, 5).reshape(B, C, rows * P,
                                                                                           grid_width * Q)
    if band.shape[-1] != images.shape[-1]:
        raise ValueError(f"the prompt rows are {band.shape[-1]} px wide, the image {images.shape[-1]}")
    return torch.cat([images, band.to(images.dtype)], dim=2)


def default_replace_slots(grid: tuple[int, int], k: int) -> list[int]:
    """The last ``k`` patch slots in raster order (the bottom rows), the paper's "bottom of the image"."""
    n = grid[0] * grid[1]
    if k > n:
        raise ValueError(f"{k} prompts do not fit in {n} patch slots")
    return list(range(n - k, n))


def place_replace(images: torch.Tensor, patches: torch.Tensor, slots: Sequence[int], grid_width: int) -> torch.Tensor:
    """The image with patch ``k`` written over raster slot ``slots[k]``."""
    out = images.clone()
    P, Q = patches.shape[-2:]
    for k, s in enumerate(slots):
        r, c = divmod(int(s), grid_width)
        out[:, :, r * P:(r + 1) * P, c * Q:(c + 1) * Q] = patches[:, k].to(out.dtype)
    return out


def to_rgb(clip: Any, x: torch.Tensor) -> torch.Tensor:
    """Normalised model input -> RGB in image units (``x * std + mean``; may leave [0, 1])."""
    return x * clip.std.to(x.device, x.dtype) + clip.mean.to(x.device, x.dtype)


def from_rgb(clip: Any, rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - clip.mean.to(rgb.device, rgb.dtype)) / clip.std.to(rgb.device, rgb.dtype)


def pixel_mode(clip: Any, patches: torch.Tensor, mode: Literal["float", "clamp", "uint8"]) -> torch.Tensor:
    """Patches as an image could carry them: ``float`` unchanged, ``clamp`` to [0, 1] RGB, ``uint8`` also rounded
    to 1/255 steps (all returned in the normalised input space)."""
    if mode == "float":
        return patches
    rgb = to_rgb(clip, patches).clamp(0.0, 1.0)  # [1, 3, 1, 1] statistics broadcast over [B, K, 3, P, P]
    if mode == "uint8":
        rgb = torch.round(rgb * 255.0) / 255.0
    return from_rgb(clip, rgb)


def _slot_pos(visual: nn.Module, placement: Placement, k: int, slots: Optional[Sequence[int]],
              append_pos: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], list[int]]:
    if placement == "append":
        return append_pos, []
    slots = list(slots) if slots is not None else default_replace_slots(_grid(visual), k)
    if len(slots) != k:
        raise ValueError(f"{k} prompts but {len(slots)} slots")
    return visual.positional_embedding.detach()[[1 + s for s in slots]], slots


def rgb_prompted_features(method: Any, x: torch.Tensor, *, placement: Placement = "append",
                          ln_invariant: bool = True, pixels: Literal["float", "clamp", "uint8"] = "float",
                          slots: Optional[Sequence[int]] = None, append_pos: Optional[torch.Tensor] = None,
                          inverse: Optional[PatchInverse] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, canvas): the method's prompts inverted to RGB patches, placed in the image, and the frozen tower
    run on that input with no access to its tokens (``append``: :func:`forward_canvas`; ``replace``: the tower's
    own forward pass)."""
    visual = method.visual
    inv = inverse or patch_inverse(visual)
    tokens = method.prompt_tokens(x)
    if tokens is None:
        raise ValueError(f"method {method.name!r} makes no token prompts to invert")
    pos, slots = _slot_pos(visual, placement, tokens.shape[1], slots, append_pos)
    patches = pixel_mode(method.clip, invert_tokens(inv, tokens, pos, ln_invariant=ln_invariant), pixels)
    gw = _grid(visual)[1]
    if placement == "append":
        canvas = place_append(x, patches, gw)
        return forward_canvas(visual, canvas, append_pos), canvas
    canvas = place_replace(x, patches, slots, gw)
    return visual(canvas.to(visual.conv1.weight.dtype)), canvas


def _dropped_slots_features(method: Any, x: torch.Tensor, slots: Sequence[int]) -> torch.Tensor:
    """Token prompts with the image patches of ``slots`` removed: what ``replace`` can at best reach."""
    visual = method.visual
    seq = patch_tokens(visual, x)
    keep = [i for i in range(seq.shape[1]) if i - 1 not in set(slots)]
    seq = seq[:, keep]
    return run_tokens(visual, torch.cat([seq, method.prompt_tokens(x).to(seq.dtype)], dim=1), seq.shape[1])


@torch.no_grad()
def inversion_report(method: Any, data: ClassifyData, *, placement: Placement = "append", ln_invariant: bool = True,
                     batch_size: int = 64, slots: Optional[Sequence[int]] = None,
                     append_pos: Optional[torch.Tensor] = None) -> dict[str, Any]:
    """Top-1 of the token prompts against the inverted RGB prompts on ``data`` (float / clamped / uint8 pixels),
    the agreement of their predictions, the largest logit difference, and the token-level gap: the relative error
    of the re-embedded tokens before ``ln_pre`` and after it, and the share of prompt pixels outside [0, 1]."""
    check_vit(method.visual)
    was = method.training
    method.eval()
    visual = method.visual
    inv = patch_inverse(visual)
    modes = ("float", "clamp", "uint8")
    n = len(data)
    correct = {m: 0 for m in ("tokens", *modes)}
    agree = {m: 0 for m in modes}
    max_logit_diff = {m: 0.0 for m in modes}
    dropped_correct = 0
    rel_pre, rel_post, out_of_range, pix = [], [], 0, 0
    K = None
    for i in range(0, n, batch_size):
        x = eval_inputs(method.clip, data.images[i:i + batch_size])
        y = data.labels[i:i + batch_size].to(x.device)
        logits_tok = method(x).float()
        pred_tok = logits_tok.argmax(-1)
        correct["tokens"] += int((pred_tok == y).sum())
        tokens = method.prompt_tokens(x).float()
        K = tokens.shape[1]
        pos, used_slots = _slot_pos(visual, placement, K, slots, append_pos)
        patches = invert_tokens(inv, tokens, pos, ln_invariant=ln_invariant)
        re = embed_patches(visual, patches).float() + (pos.to(tokens.device).float() if pos is not None else 0.0)
        rel_pre.append(((re - tokens).norm(dim=-1) / tokens.norm(dim=-1).clamp_min(1e-12)).flatten())
        ln_re, ln_tok = visual.ln_pre(re), visual.ln_pre(tokens)
        rel_post.append(((ln_re - ln_tok).norm(dim=-1) / ln_tok.norm(dim=-1).clamp_min(1e-12)).flatten())
        rgb = to_rgb(method.clip, patches)
        out_of_range += int(((rgb < 0) | (rgb > 1)).sum())
        pix += rgb.numel()
        for m in modes:
            feats, _ = rgb_prompted_features(method, x, placement=placement, ln_invariant=ln_invariant, pixels=m,
                                             slots=slots, append_pos=append_pos, inverse=inv)
            logits = method.head(feats).float()
            pred = logits.argmax(-1)
            correct[m] += int((pred == y).sum())
            agree[m] += int((pred == pred_tok).sum())
            max_logit_diff[m] = max(max_logit_diff[m], float((logits - logits_tok).abs().max()))
        if placement == "replace":
            lg = method.head(_dropped_slots_features(method, x, used_slots)).float()
            dropped_correct += int((lg.argmax(-1) == y).sum())
    method.train(was)
    pre, post = torch.cat(rel_pre), torch.cat(rel_post)
    report: dict[str, Any] = {
        "placement": placement,
        "ln_invariant": ln_invariant,
        "n": n,
        "num_prompts": K,
        "width": inv.width,
        "patch_dim": int(inv.weight.shape[1]),
        "conv1_rank": inv.rank,
        "tokens_in_range": inv.full_rank,
        "top1_tokens": round(correct["tokens"] / max(1, n), 6),
        **{f"top1_rgb_{m}": round(correct[m] / max(1, n), 6) for m in modes},
        **{f"agree_{m}": round(agree[m] / max(1, n), 6) for m in modes},
        **{f"max_logit_diff_{m}": round(max_logit_diff[m], 6) for m in modes},
        "token_rel_err_mean": round(float(pre.mean()), 8),
        "token_rel_err_max": round(float(pre.max()), 8),
        "post_ln_rel_err_mean": round(float(post.mean()), 8),
        "post_ln_rel_err_max": round(float(post.max()), 8),
        "pixels_out_of_range": round(out_of_range / max(1, pix), 6),
    }
    if placement == "replace":
        report["top1_tokens_dropped"] = round(dropped_correct / max(1, n), 6)
        report["slots"] = list(used_slots)
    return report
