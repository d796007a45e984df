"""The AR backbone: taming-transformers' GPT over VQGAN tokens (genvpt/generators/ar.py)."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .base import Backbone, Injections


class ARBackbone(Backbone):
    name = "ar"
    tokenizer_family = "vqgan"
    features = frozenset({"prefix", "replace_condition", "prefix_gate"})
    lora_targets = ("attn.key", "attn.query", "attn.value", "attn.proj", "mlp.0", "mlp.2")
    adapter_sites = r"blocks\.\d+\.(attn|mlp)"

    @property
    def width(self) -> int:
        return int(self.generator.cfg.n_embd)

    @torch.no_grad()
    def input_embeddings(self, batch: torch.Tensor) -> torch.Tensor:
        g = self.generator
        seq = g.order.to_sequence(batch.reshape(batch.shape[0], -1))
        start = g.start_tokens(None, batch.shape[0], batch.device)
        return g._embed(torch.cat([start[:, None], seq[:, :-1]], dim=1), 0)

    @torch.no_grad()
    def condition_embeddings(self, labels: torch.Tensor) -> torch.Tensor:
        g = self.generator
        lab = labels.clone()
        null = lab == self.null_label
        start = g.start_tokens(lab.masked_fill(null, 0), lab.shape[0], lab.device)
        start = torch.where(null, g.start_tokens(None, lab.shape[0], lab.device), start)
        return g._embed(start[:, None], 0)[:, 0]

    def loss(self, batch: torch.Tensor, labels: Optional[torch.Tensor], inj: Injections, *,
             generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        self.check_injections(inj)
        with self.gating(inj):
            logits, loss = self.generator(batch, labels, prefix_embeds=inj.prefix, replace_start=inj.replace_condition)
        return loss, logits

    def sample_tokens(self, labels: Optional[torch.Tensor], inj: Optional[Injections] = None, *,
                      generator: torch.Generator, **kw: Any) -> torch.Tensor:
        inj = inj or Injections()
        self.check_injections(inj)
        with self.gating(inj):
            return self.generator.sample(labels, generator=generator, prefix_embeds=inj.prefix,
                                         uncond_prefix_embeds=inj.uncond_prefix, replace_start=inj.replace_condition,
                                         **kw)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.tokenizer.decode_indices(tokens)
