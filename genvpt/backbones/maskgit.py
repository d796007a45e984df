"""The NAR backbone: MaskGIT over VQGAN tokens (genvpt/generators/maskgit.py)."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .base import Backbone, Injections


class MaskGITBackbone(Backbone):
    name = "maskgit"
    tokenizer_family = "vqgan"
    features = frozenset({"prefix", "replace_condition", "per_step_prefix", "prefix_gate"})
    # the attention's packed in_proj is read as a weight (F.linear), so LoRA goes on out_proj and the MLP
    lora_targets = ("mha.out_proj", "fn.net.0", "fn.net.3")
    adapter_sites = r"transformer\.layers\.\d+\.[01]\.fn"
    label_smoothing = 0.1  # MaskGIT's and VPT-generative's

    @property
    def width(self) -> int:
        return int(self.generator.cfg.hidden_dim)

    @torch.no_grad()
    def input_embeddings(self, batch: torch.Tensor) -> torch.Tensor:
        g = self.generator
        tok = batch.reshape(batch.shape[0], -1)
        return g.first_layer(g.tok_emb(tok) + g.pos_emb[:, : tok.shape[1]])

    @torch.no_grad()
    def condition_embeddings(self, labels: torch.Tensor) -> torch.Tensor:
        g = self.generator
        N = g.cfg.seq_len
        cls = g.class_tokens(labels, labels.shape[0], labels.device)
        return g.first_layer(g.tok_emb(cls) + g.pos_emb[:, N])

    def loss(self, batch: torch.Tensor, labels: Optional[torch.Tensor], inj: Injections, *,
             generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Masked-token cross-entropy (label smoothing 0.1, per-sample mean over the masked tokens, batch mean)."""
        self.check_injections(inj)
        schedule = getattr(self.generator.cfg, "mask_schedule", "cosine")
        with self.gating(inj):
            loss = self.generator.loss(batch, labels, prefix_embeds=inj.prefix, replace_class=inj.replace_condition,
                                       label_smoothing=self.label_smoothing, label_drop=0.0, schedule=schedule,
                                       generator=generator)
        return loss, None

    def sample_tokens(self, labels: Optional[torch.Tensor], inj: Optional[Injections] = None, *,
                      generator: torch.Generator, **kw: Any) -> torch.Tensor:
        inj = inj or Injections()
        self.check_injections(inj)
        with self.gating(inj):
            return self.generator.sample(labels, generator=generator, prefix_embeds=inj.prefix,
                                         uncond_prefix_embeds=inj.uncond_prefix, replace_class=inj.replace_condition,
                                         **kw)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.tokenizer.decode_indices(tokens)
