"""MVP (multi-scale visual prompts) on a frozen VAR, and the baselines it is compared with.

**Frame prompts** (:class:`FramePrompt`). For every prompted scale t a prompt feature map F_t (S_t x S_t x D, zero off
the frame positions of genvpt/prompts/positions.py) is ADDED to that scale's input token map through VAR's
``input_offsets`` hook. D is the transformer width C: the offsets are added after VAR's ``word_embed`` projection
together with the level and position embeddings, i.e. in the embedding space the input tokens are projected to (this
is what matches the paper's parameter counts, Table 1: d16 310M -> 310.4M). The sequence length does not change.
Frame prompts start at zero by default, so training starts exactly at the frozen VAR.

**Prefilled prompt** (:class:`PrefixPrompt`, Table 4): the same number of learnable tokens prepended to the sequence
through VAR's ``prefix_embeds`` hook (every token sees them; they see only themselves). The sequence grows by P.

**Text-to-image** (:class:`TextConditioner`, VAR-CLIP style): the L2-normalised CLIP text embedding goes through a
Linear to width C and replaces ``class_emb(label)`` (start token and AdaLN condition) via VAR's ``cond_embeds``; a
learned null embedding (in CLIP space, projected the same way) replaces dropped texts in training and is the
unconditional branch of classifier-free guidance when sampling. Frame prompts and the projection train. The
projection starts as the least-squares map from the class sentences' CLIP embeddings to VAR's class embeddings (and
from the empty text to the null class), so a class sentence first conditions VAR as its class did.

**LoRA** (:func:`apply_lora`): peft's ``inject_adapter_in_model`` on ``attn.proj``, ``ffn.fc1``, ``ffn.fc2``,
``ada_lin.1`` (blocks and head_nm) and ``head``: modules whose forward goes through ``nn.Linear.__call__``. Never
``mat_qkv``: VAR's attention computes ``F.linear(x, mat_qkv.weight, ...)``, which bypasses a LoRA wrapper.
**Full fine-tuning**: every VAR weight trains.

**Differentiable path from logits to images** (:func:`soft_fhat`, for the multi-level semantic loss). VAR's training
is teacher-forced: the logits of scale t are predicted from the ground-truth scales before it. Each scale's logits
become a *soft residual*: the softmax-weighted average of the codebook vectors (``soft_codes: softmax``, the default:
deterministic, low-variance, gradients reach every logit) or a straight-through Gumbel-softmax one-hot (``gumbel``:
hard codes forward, soft gradients back). The soft residual maps are accumulated exactly as the tokenizer
accumulates codes (bicubic upsampling to the latent size except at the last scale, then that scale's phi conv) into
f_hat; I_sen is the frozen decoder's image of f_hat after kappa = floor(beta K) scales, I_cap after all K scales;
both go to the frozen CLIP. Gradients flow through the frozen decoder, phi convs and CLIP into the logits and from
there into the trainable parameters only.

The CLIP loss (:func:`clip_contrastive_loss`) is the symmetric InfoNCE of CLIP. Texts shared by several images of a
batch (the class sentences) are de-duplicated: image->text is a cross-entropy over the distinct texts, text->image
a multi-positive cross-entropy (uniform target over the images of that text); without duplicates this is exactly
CLIP's loss.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import CheckpointError, CheckpointMismatch, compare_state_dict
from .params import LORA_SAFE_TARGETS, PromptConfig
from .positions import prompt_positions

log = logging.getLogger(__name__)

__all__ = [
    "FramePrompt",
    "PrefixPrompt",
    "TextConditioner",
    "PromptedVAR",
    "apply_lora",
    "lora_target_regex",
    "build_prompted",
    "init_prefix_from_embeddings",
    "soft_fhat",
    "clip_contrastive_loss",
    "state_hash",
    "base_state_dict",
    "to_uint8",
]


# ---------------------------------------------------------------------------------------------------------------
# prompt modules


class FramePrompt(nn.Module):
    """Learnable prompt tokens at fixed positions of each scale, added to VAR's input token maps.

    ``positions``: one LongTensor of flat (row-major) positions per scale (empty = unprompted scale).
    ``tokens`` [N, C] holds all scales' prompt vectors back to back; ``positions`` (a buffer) is saved with them.
    """

    def __init__(self, patch_nums: Sequence[int], C: int, positions: Sequence[torch.Tensor], init_std: float = 0.0,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if len(positions) != len(patch_nums):
            raise ValueError(f"need one position set per scale ({len(patch_nums)}), got {len(positions)}")
        for si, (S, p) in enumerate(zip(patch_nums, positions)):
            if p.numel() and (int(p.min()) < 0 or int(p.max()) >= S * S or p.unique().numel() != p.numel()):
                raise ValueError(f"scale {si} ({S}x{S}): positions must be distinct indices in [0, {S * S})")
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.C = int(C)
        self.counts = [int(p.numel()) for p in positions]
        self.register_buffer("positions", torch.cat([p.long().reshape(-1) for p in positions]))
        tokens = torch.zeros(sum(self.counts), self.C)
        if init_std > 0:
            tokens.normal_(0.0, init_std, generator=generator)
        self.tokens = nn.Parameter(tokens)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def feature_maps(self) -> list[Optional[torch.Tensor]]:
        """F_t per scale: [1, S_t^2, C] (zero off the frame) or None for an unprompted scale."""
        out: list[Optional[torch.Tensor]] = []
        start = 0
        for S, k in zip(self.patch_nums, self.counts):
            if k == 0:
                out.append(None)
                continue
            pos = self.positions[start:start + k]
            fmap = self.tokens.new_zeros(S * S, self.C).index_copy(0, pos, self.tokens[start:start + k])
            out.append(fmap.unsqueeze(0))
            start += k
        return out

    def var_kwargs(self) -> dict[str, Any]:
        return {"input_offsets": self.feature_maps()}


class PrefixPrompt(nn.Module):
    """P learnable tokens prepended to VAR's sequence (the prefilled-prompt baseline)."""

    def __init__(self, num_tokens: int, C: int, init_std: float = 0.02, generator: Optional[torch.Generator] = None):
        super().__init__()
        if num_tokens < 1:
            raise ValueError("a prefilled prompt needs at least one token")
        tokens = torch.zeros(int(num_tokens), int(C))
        if init_std > 0:
            tokens.normal_(0.0, init_std, generator=generator)
        self.tokens = nn.Parameter(tokens)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def var_kwargs(self) -> dict[str, Any]:
        return {"prefix_embeds": self.tokens.unsqueeze(0)}


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


# ---------------------------------------------------------------------------------------------------------------
# LoRA


def lora_target_regex(targets: Sequence[str]) -> str:
    """A regex matching module names ending in one of ``targets`` (peft full-matches it against every name)."""
    bad = [t for t in targets if t not in LORA_SAFE_TARGETS]
    if bad:
        raise ValueError(f"LoRA targets {bad} are not allowed on VAR; allowed: {', '.join(LORA_SAFE_TARGETS)}")
    return r"^(.*\.)?(" + "|".join(re.escape(t) for t in targets) + r")$"


def apply_lora(var: nn.Module, rank: int, alpha: float, dropout: float, targets: Sequence[str]) -> list[str]:
    """Inject LoRA adapters (peft) into ``var`` in place; return the adapted module names. Only adapter weights
    require grad afterwards."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout),
                        target_modules=lora_target_regex(targets), bias="none")
    inject_adapter_in_model(config, var)
    names = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in var.named_parameters() if ".lora_A." in n})
    if not names:
        raise RuntimeError(f"LoRA matched no module of {type(var).__name__} for targets {list(targets)}")
    for n, p in var.named_parameters():
        p.requires_grad_(".lora_" in n)
    return names


def base_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without LoRA adapter entries and with peft's ``.base_layer`` names folded back, so a
    LoRA-injected model compares key by key with the model before injection."""
    out = {}
    for k, v in module.state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v
    return out


def state_hash(state: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict (bit-for-bit identity check)."""
    sd = base_state_dict(state) if isinstance(state, nn.Module) else state
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# the prompted model


class PromptedVAR(nn.Module):
    """A VAR plus the trainable part of one method. ``forward`` gives teacher-forced logits with the prompts in place;
    :meth:`sample` runs VAR's sampler with them."""

    def __init__(self, var: nn.Module, method: str, prompt: Optional[nn.Module] = None,
                 text: Optional[TextConditioner] = None, lora_modules: Sequence[str] = ()):
        super().__init__()
        self.var = var
        self.method = method
        self.prompt = prompt
        self.text = text
        self.lora_modules = list(lora_modules)

    # -- conditioning -------------------------------------------------------------------------------------------
    def var_kwargs(self) -> dict[str, Any]:
        return self.prompt.var_kwargs() if self.prompt is not None else {}

    def condition(self, text_emb: torch.Tensor, drop: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.text is None:
            raise RuntimeError(f"method {self.method!r} is class-conditional; it has no text conditioning")
        return self.text(text_emb, drop)

    def forward(self, labels: Optional[torch.Tensor], x_BLCv: torch.Tensor, *,
                cond_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.var(labels, x_BLCv, cond_embeds=cond_embeds, **self.var_kwargs())

    # -- what trains and what is saved --------------------------------------------------------------------------
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def adapter_keys(self) -> list[str]:
        """State-dict keys saved for this method: the trainable parameters plus the prompt's position buffer."""
        keys = [n for n, _ in self.trainable_named_parameters()]
        if isinstance(self.prompt, FramePrompt):
            keys.append("prompt.positions")
        return sorted(keys)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        sd = self.state_dict()
        return {k: sd[k].detach().cpu().clone() for k in self.adapter_keys()}

    def load_adapter_state_dict(self, sd: Mapping[str, torch.Tensor], source: str = "<adapter>") -> None:
        own = self.state_dict()
        expected = {k: own[k] for k in self.adapter_keys()}
        missing, unexpected, mis_shaped = compare_state_dict(expected, sd)
        if missing or unexpected or mis_shaped:
            raise CheckpointMismatch(source, missing, unexpected, mis_shaped)
        if "prompt.positions" in sd and not torch.equal(sd["prompt.positions"].cpu(), own["prompt.positions"].cpu()):
            raise CheckpointError(f"{source}: its prompt positions differ from those its configuration gives")
        with torch.no_grad():
            for k, v in sd.items():
                own[k].copy_(v.to(own[k].device, own[k].dtype))

    # -- sampling -----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, labels: Optional[torch.Tensor], *, tokenizer: Any, generator: Optional[torch.Generator] = None,
               text_emb: Optional[torch.Tensor] = None, **kw: Any) -> list[torch.Tensor]:
        """VAR's next-scale sampler with this method's prompts -> token maps per scale. With ``text_emb``
        (text-to-image) the projected texts condition it and the learned null text is guidance's unconditional
        branch. ``kw``: VAR's sampling settings (cfg, top_k, top_p, temperature)."""
        extra = self.var_kwargs()
        if text_emb is None:
            return self.var.sample(labels, tokenizer=tokenizer, generator=generator, **extra, **kw)
        cond = self.condition(text_emb)
        with self._null_as_unconditional():
            return self.var.sample(None, tokenizer=tokenizer, generator=generator, cond_embeds=cond, **extra, **kw)

    @contextlib.contextmanager
    def _null_as_unconditional(self) -> Iterator[None]:
        """Guidance's unconditional branch = the learned null text. VAR.sample takes no unconditional embedding, so
        its ``_cond`` (class embedding lookup) answers the null-class request with our null condition meanwhile."""
        var = self.var
        original = var._cond

        def cond(labels, n, cond_embeds):
            if labels is None and cond_embeds is None:
                return self.text.null_condition(n)
            return original(labels, n, cond_embeds)

        var._cond = cond
        try:
            yield
        finally:
            del var._cond  # back to the class's method


@torch.no_grad()
def init_prefix_from_embeddings(model: "PromptedVAR", x_BLCv: torch.Tensor, positions: Sequence[torch.Tensor]) -> None:
    """Set a prefilled prompt's tokens to the frozen VAR's input embeddings (word + level + position) at the frame
    positions, averaged over the samples of ``x_BLCv`` (teacher-forcing inputs [B, L-1, Cvae]); the start token
    (scale 0) uses the null-class start embedding."""
    var = model.var
    B = x_BLCv.shape[0]
    null = torch.full((B,), var.num_classes, dtype=torch.long, device=x_BLCv.device)
    sos = var.class_emb(null).unsqueeze(1) + var.pos_start
    x = torch.cat([sos, var.word_embed(x_BLCv.float())], dim=1)
    x = x + var.lvl_embed(var.lvl_1L.expand(B, -1)) + var.pos_1LC
    flat = torch.cat([p + var.begin_ends[si][0] for si, p in enumerate(positions)]).to(x.device)
    model.prompt.tokens.copy_(x[:, flat].mean(0))


def _trainable_summary(model: PromptedVAR) -> str:
    n = sum(p.numel() for _, p in model.trainable_named_parameters())
    return f"{model.method}: {n} trainable parameters"


def build_prompted(var: nn.Module, cfg: PromptConfig, *, clip_dim: Optional[int] = None) -> PromptedVAR:
    """Wrap a (loaded) VAR for ``cfg.method``: freeze what must stay frozen, add what trains."""
    var.eval()
    for p in var.parameters():
        p.requires_grad_(False)
    patch_nums = tuple(var.patch_nums)
    C = int(var.C)
    g = torch.Generator().manual_seed(int(cfg.seed) * 1000003 + 17)
    positions = prompt_positions(patch_nums, cfg.tau, cfg.positions, first_scale=cfg.first_scale,
                                 seed=cfg.positions_seed)
    prompt: Optional[nn.Module] = None
    text: Optional[TextConditioner] = None
    lora_modules: list[str] = []
    if cfg.method in ("mvp", "mvp_t2i"):
        prompt = FramePrompt(patch_nums, C, positions, init_std=0.0 if cfg.init_std is None else cfg.init_std, generator=g)
    elif cfg.method == "prefilled":
        n = sum(int(p.numel()) for p in positions)
        prompt = PrefixPrompt(n, C, init_std=0.02 if cfg.init_std is None else cfg.init_std, generator=g)
    elif cfg.method == "lora":
        lora_modules = apply_lora(var, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
    elif cfg.method == "finetune":
        for p in var.parameters():
            p.requires_grad_(True)
    else:
        raise ValueError(f"unknown prompt method {cfg.method!r}")
    if cfg.text_to_image:
        if clip_dim is None:
            raise ValueError("text-to-image needs the CLIP text embedding width (clip_dim)")
        text = TextConditioner(clip_dim, C)
    device = next(var.parameters()).device
    model = PromptedVAR(var, cfg.method, prompt, text, lora_modules).to(device)
    log.debug(_trainable_summary(model))
    return model


# ---------------------------------------------------------------------------------------------------------------
# the semantic loss


def _code_weights(logits: torch.Tensor, mode: str, temperature: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    if mode == "softmax":
        return torch.softmax(logits.float() / temperature, dim=-1)
    if mode == "gumbel":
        u = torch.rand(logits.shape, generator=generator,
                       device=generator.device if generator is not None else logits.device).to(logits.device)
        g = -torch.log((-torch.log(u.clamp(1e-20, 1.0))).clamp_min(1e-20))  # standard Gumbel noise
        soft = torch.softmax((logits.float() + g) / temperature, dim=-1)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft  # straight-through
    raise ValueError(f"unknown soft_codes {mode!r}; allowed: softmax, gumbel")


def soft_fhat(logits: torch.Tensor, tokenizer: Any, upto: Sequence[int], *, mode: str = "softmax",
              temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> list[torch.Tensor]:
    """Differentiable f_hat after the first ``k`` scales for every k in ``upto`` (from teacher-forced logits
    [B, L, V]); accumulated as the tokenizer accumulates codes (bicubic up to the latent size except at the last
    scale, then the scale's phi)."""
    quant = tokenizer.quantize
    E = quant.embedding.weight  # [V, Cvae]
    patch_nums = tuple(tokenizer.patch_nums)
    SN = len(patch_nums)
    if any(k < 1 or k > SN for k in upto):
        raise ValueError(f"upto must lie in 1..{SN}, got {list(upto)}")
    B = logits.shape[0]
    H = patch_nums[-1]
    Cvae = E.shape[1]
    f_hat = logits.new_zeros(B, Cvae, H, H, dtype=torch.float32)
    wanted = {int(k) for k in upto}
    out: dict[int, torch.Tensor] = {}
    begin = 0
    for si, pn in enumerate(patch_nums[: max(wanted)]):
        lg = logits[:, begin:begin + pn * pn]
        begin += pn * pn
        w = _code_weights(lg, mode, temperature, generator)
        h = (w @ E.float()).transpose(1, 2).reshape(B, Cvae, pn, pn)
        if si != SN - 1:
            h = F.interpolate(h, size=(H, H), mode="bicubic")
        f_hat = f_hat + quant.quant_resi[si / (SN - 1)](h)
        if si + 1 in wanted:
            out[si + 1] = f_hat
    return [out[int(k)] for k in upto]


def clip_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, text_ids: torch.Tensor,
                          logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric CLIP loss between B images and T distinct texts; ``text_ids`` [B] names each image's text.
    Texts without an image in the batch are negatives for image->text only."""
    logits = float(logit_scale) * image_features @ text_features.T  # [B, T]
    l_i2t = F.cross_entropy(logits, text_ids)
    present = torch.unique(text_ids)
    target = (text_ids.view(1, -1) == present.view(-1, 1)).float()
    target = target / target.sum(1, keepdim=True)
    l_t2i = -(target * F.log_softmax(logits.T[present], dim=1)).sum(1).mean()
    return 0.5 * (l_i2t + l_t2i)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
