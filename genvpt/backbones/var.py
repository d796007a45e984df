"""The VAR backbone: next-scale prediction over the multi-scale VQ-VAE's tokens (genvpt/generators/var.py).

Besides the teacher-forced loss and sampling, VAR exposes a differentiable path from logits to images
(:meth:`VARBackbone.soft_images`), which MVP's multi-level semantic loss needs: each scale's logits become a *soft
residual* (the softmax-weighted average of the codebook vectors, or a straight-through Gumbel-softmax one-hot),
accumulated exactly as the tokenizer accumulates codes (bicubic upsampling to the latent size except at the last
scale, then that scale's phi conv) into f_hat, then decoded by the frozen decoder.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from .base import Backbone, Injections


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
    [B, L, V])."""
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


class VARBackbone(Backbone):
    name = "var"
    tokenizer_family = "msvq"
    features = frozenset({"prefix", "input_offsets", "cond_embeds", "soft_decode", "prefix_gate"})
    # never mat_qkv: VAR's attention computes F.linear(x, mat_qkv.weight, ...), which bypasses a LoRA wrapper
    lora_targets = ("attn.proj", "ffn.fc1", "ffn.fc2", "ada_lin.1", "head")
    adapter_sites = r"blocks\.\d+\.(attn|ffn)"

    @property
    def width(self) -> int:
        return int(self.generator.C)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.generator.patch_nums)

    def check_pairing(self) -> None:
        super().check_pairing()
        from ..checkpoint import CheckpointError

        g, t = self.generator.cfg, self.tokenizer
        if tuple(getattr(t, "patch_nums", ())) != tuple(g.patch_nums):
            raise CheckpointError(f"VAR scales {tuple(g.patch_nums)} differ from the tokenizer's "
                                  f"{tuple(getattr(t, 'patch_nums', ()))}")
        if getattr(t, "Cvae", g.Cvae) != g.Cvae:
            raise CheckpointError(f"VAR expects Cvae {g.Cvae}, the tokenizer has {t.Cvae}")

    def check_tokens(self, scales: Sequence[torch.Tensor]) -> None:
        grid = tuple(round(s.shape[1] ** 0.5) for s in scales)
        if grid != self.patch_nums:
            raise ValueError(f"the token maps have scales {grid}, VAR has {self.patch_nums}: tokens from another "
                             f"tokenizer?")

    def batch(self, scales: Sequence[torch.Tensor], idx: torch.Tensor) -> list[torch.Tensor]:
        return [s[idx] for s in scales]

    def logits(self, batch: Sequence[torch.Tensor], labels: Optional[torch.Tensor], inj: Injections) -> torch.Tensor:
        self.check_injections(inj)
        with torch.no_grad():  # the teacher-forcing input is data: no gradient flows into the tokenizer
            x = self.tokenizer.idxBl_to_var_input(list(batch))
        with self.gating(inj):
            return self.generator(labels, x, input_offsets=inj.input_offsets, prefix_embeds=inj.prefix,
                                  cond_embeds=inj.cond_embeds)

    @torch.no_grad()
    def input_embeddings(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        var = self.generator
        x_BLCv = self.tokenizer.idxBl_to_var_input(list(batch))
        B = x_BLCv.shape[0]
        null = torch.full((B,), var.num_classes, dtype=torch.long, device=x_BLCv.device)
        sos = var.class_emb(null).unsqueeze(1) + var.pos_start
        x = torch.cat([sos, var.word_embed(x_BLCv.float())], dim=1)
        return x + var.lvl_embed(var.lvl_1L.expand(B, -1)) + var.pos_1LC

    def scale_starts(self) -> list[int]:
        """Index of each scale's first token in the flattened sequence."""
        out, start = [], 0
        for pn in self.patch_nums:
            out.append(start)
            start += pn * pn
        return out

    def loss(self, batch: Sequence[torch.Tensor], labels: Optional[torch.Tensor], inj: Injections, *,
             generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        logits = self.logits(batch, labels, inj)
        gt = torch.cat(list(batch), dim=1)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), gt.reshape(-1)), logits

    def soft_images(self, logits: torch.Tensor, upto: Sequence[int], *, mode: str = "softmax",
                    temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> list[torch.Tensor]:
        fhats = soft_fhat(logits, self.tokenizer, upto, mode=mode, temperature=temperature, generator=generator)
        return [self.tokenizer.fhat_to_img(f) for f in fhats]

    def sample_tokens(self, labels: Optional[torch.Tensor], inj: Optional[Injections] = None, *,
                      generator: torch.Generator, **kw: Any) -> list[torch.Tensor]:
        inj = inj or Injections()
        self.check_injections(inj)
        with self.gating(inj):
            return self.generator.sample(labels, tokenizer=self.tokenizer, generator=generator,
                                         input_offsets=inj.input_offsets, prefix_embeds=inj.prefix,
                                         cond_embeds=inj.cond_embeds, null_embeds=inj.null_embeds, **kw)

    def decode(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return self.tokenizer.idxBl_to_img(list(tokens), same_shape=True, last_one=True)
