"""The backbone protocol: one frozen generator family behind one interface, and the registry of families.

A :class:`Backbone` pairs a generator with its tokenizer and knows, for its family, how to

* cut a training batch out of token data (:meth:`batch`),
* compute the teacher-forced training loss with *injections* (:meth:`loss`),
* sample tokens with injections (:meth:`sample_tokens`) and decode them (:meth:`decode`),
* and what an adaptation method may touch: its embedding width, the modules where LoRA takes effect
  (:attr:`lora_targets`), where bottleneck adapters go (:attr:`adapter_sites`), and which injections it supports
  (:attr:`features`).

Injections (:class:`Injections`) are what an adaptation method hands the frozen network: prefix embeddings
prepended to the sequence (optionally taking the class token's slot, as VPT-generative's prompts do), the
unconditional branch's prefix for guidance, additive input offsets per scale (MVP's frame prompts), and a condition
embedding replacing the class embedding (text-to-image), and per-layer gates on the prefix's attention (zero-init
gated prompts: at gate 0 the frozen network's outputs are exactly its own). The training loop, the sampler and the stages talk to this
interface only; none of them branches on a family name.

Adding a family: one file with a subclass, and one line ``register_backbone("name", Class)`` in
``genvpt/backbones/__init__.py`` (or anywhere before use: the registry is a plain dict).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import nn

from ..registry import Registry

log = logging.getLogger(__name__)

__all__ = ["Injections", "Backbone", "BACKBONES", "register_backbone", "backbone_class", "to_uint8"]


@dataclass
class Injections:
    """What a method puts into the frozen network (every field optional; None = nothing).

    ``prefix`` [B or 1, P, D] tokens prepended to the sequence (no position embedding); ``replace_condition``: the
    prefix takes the class token's slot; ``uncond_prefix`` [B or 1, P, D]: guidance's unconditional branch prefix (a
    learned null prompt); ``input_offsets``: one [B or 1, n_k, D] tensor (or None) per scale, added to the input
    embeddings; ``cond_embeds`` [B, D] replace the class embedding; ``null_embeds`` [1, D] replace the null class in
    guidance's unconditional branch. A list of prefixes (one per decoding step) is allowed where the backbone has
    the ``per_step_prefix`` feature. ``prefix_gate`` [layers, heads]: every non-prefix token attends to the prefix
    through its own softmax scaled by ``tanh(gate)`` (``generators.common.gated_prefix_attend``; the
    ``prefix_gate`` feature), so that gates at 0 leave the frozen network's outputs as they are without the prefix."""

    prefix: Any = None
    replace_condition: bool = False
    uncond_prefix: Any = None
    input_offsets: Optional[Sequence[Optional[torch.Tensor]]] = None
    cond_embeds: Optional[torch.Tensor] = None
    null_embeds: Optional[torch.Tensor] = None
    prefix_gate: Optional[torch.Tensor] = None

    def used(self) -> set[str]:
        """The features these injections need from a backbone."""
        need = set()
        if self.prefix is not None:
            need.add("prefix")
            if not torch.is_tensor(self.prefix):
                need.add("per_step_prefix")
        if self.replace_condition:
            need.add("replace_condition")
        if self.input_offsets is not None:
            need.add("input_offsets")
        if self.cond_embeds is not None or self.null_embeds is not None:
            need.add("cond_embeds")
        if self.prefix_gate is not None:
            need.add("prefix_gate")
        return need


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class Backbone:
    """A frozen generator with its tokenizer. Subclasses implement one family."""

    name: ClassVar[str] = ""
    tokenizer_family: ClassVar[str] = ""
    # injections this family supports: prefix, replace_condition, per_step_prefix, input_offsets, cond_embeds,
    # prefix_gate (the generator's gated_attention(): the attention modules that gate a prefix), soft_decode (a
    # differentiable path from logits to images)
    features: ClassVar[frozenset[str]] = frozenset()
    # module-name suffixes whose forward goes through nn.Linear.__call__ (so a LoRA wrapper takes effect)
    lora_targets: ClassVar[tuple[str, ...]] = ()
    # regex over module names: a bottleneck adapter is added to each matching module's output
    adapter_sites: ClassVar[str] = ""

    def __init__(self, generator: nn.Module, tokenizer: nn.Module, sample_defaults: Optional[dict] = None):
        fam = getattr(generator, "family", None)
        if fam != self.name:
            from ..checkpoint import CheckpointError

            raise CheckpointError(f"the generator is a {fam!r} model, not {self.name!r}")
        self.generator = generator.eval()
        self.tokenizer = tokenizer.eval()
        self.sample_defaults = dict(sample_defaults or {})
        self.check_pairing()

    # -- description ----------------------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.name

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def num_classes(self) -> int:
        return int(self.generator.cfg.num_classes)

    @property
    def null_label(self) -> int:
        """The label of guidance's unconditional branch (< 0: the backbone has no null class)."""
        return int(self.generator.null_label)

    @property
    def width(self) -> int:
        """Width D of the embeddings the transformer reads (prefix / offset vectors have this size)."""
        raise NotImplementedError

    def check_pairing(self) -> None:
        from ..checkpoint import CheckpointError

        vocab = getattr(self.tokenizer, "vocab_size", None) or getattr(self.tokenizer, "n_embed", None)
        if vocab is not None and vocab != self.generator.cfg.vocab_size:
            raise CheckpointError(f"{self.name} generator predicts {self.generator.cfg.vocab_size} codes but the "
                                  f"tokenizer has {vocab}")

    def to(self, device: torch.device | str) -> "Backbone":
        self.generator.to(device)
        self.tokenizer.to(device)
        return self

    def fresh_generator(self, seed: int) -> nn.Module:
        """A newly initialised generator of the same family and size (training from scratch)."""
        torch.manual_seed(int(seed))
        return type(self.generator)(self.generator.cfg).to(self.device)

    def _gated_modules(self) -> list:
        fn = getattr(self.generator, "gated_attention", None)
        if fn is None:
            raise ValueError(f"the {self.name} generator {type(self.generator).__name__} has no gated prefix attention")
        return fn()

    @property
    def gate_shape(self) -> tuple[int, int]:
        """[layers, heads] of the prefix gates (:class:`Injections` ``prefix_gate``)."""
        mods = self._gated_modules()
        heads = getattr(mods[0], "heads", None) or getattr(mods[0], "n_head")
        return len(mods), int(heads)

    def gating(self, inj: Optional[Injections]) -> contextlib.AbstractContextManager:
        """The context in which the generator's attention gates ``inj.prefix`` with ``inj.prefix_gate`` (nothing to
        do without gates)."""
        if inj is None or inj.prefix_gate is None:
            return contextlib.nullcontext()
        from ..generators.common import prefix_gates

        if inj.replace_condition:
            raise ValueError("gated prompts keep the condition token (replace_condition false): at gate 0 the frozen "
                             "network must see its own inputs")
        if not torch.is_tensor(inj.prefix):
            raise ValueError("prefix_gate needs one prefix tensor (no per-step prefixes)")
        if inj.uncond_prefix is not None and inj.uncond_prefix.shape[1] != inj.prefix.shape[1]:
            raise ValueError("prefix_gate needs the unconditional prefix as long as the prefix")
        return prefix_gates(self._gated_modules(), int(inj.prefix.shape[1]), inj.prefix_gate)

    def check_injections(self, inj: Injections) -> None:
        missing = inj.used() - set(self.features)
        if missing:
            raise ValueError(f"the {self.name} backbone does not support {sorted(missing)} "
                             f"(it supports {sorted(self.features)})")

    # -- training -------------------------------------------------------------------------------------------------
    def batch(self, scales: Sequence[torch.Tensor], idx: torch.Tensor) -> Any:
        """The training tokens of samples ``idx`` from token data's per-scale tensors (default: the one grid)."""
        return scales[0][idx]

    def check_tokens(self, scales: Sequence[torch.Tensor]) -> None:
        """Raise ValueError when token data does not fit this backbone (another tokenizer's tokens). The default
        (AR, MaskGIT): one token grid of the generator's size per image."""
        cfg = self.generator.cfg
        if len(scales) != 1 or scales[0].shape[1] != cfg.seq_len:
            raise ValueError(f"the {self.name} backbone reads one {cfg.grid}x{cfg.grid} token grid per image; got "
                             f"scales of {[int(s.shape[1]) for s in scales]} tokens (another tokenizer?)")

    def loss(self, batch: Any, labels: Optional[torch.Tensor], inj: Injections, *,
             generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Teacher-forced (or masked-token) training loss and the logits when the family has them."""
        raise NotImplementedError

    def input_embeddings(self, batch: Any) -> torch.Tensor:
        """The frozen network's input embeddings [B, L, D] of a training batch with the null condition (what a
        prefilled prompt starts from)."""
        raise NotImplementedError(f"the {self.name} backbone does not expose its input embeddings")

    def condition_embeddings(self, labels: torch.Tensor) -> torch.Tensor:
        """The input embedding [B, D] of the condition token of ``labels`` (the null label allowed), as the frozen
        network first sees it: what a prompt in the condition's slot may start from."""
        raise NotImplementedError(f"the {self.name} backbone has no condition token")

    def soft_images(self, logits: torch.Tensor, upto: Sequence[int], **kw: Any) -> list[torch.Tensor]:
        """Differentiable images decoded from logits (families with the ``soft_decode`` feature)."""
        raise NotImplementedError(f"the {self.name} backbone has no differentiable decoding")

    # -- sampling -------------------------------------------------------------------------------------------------
    def sample_tokens(self, labels: Optional[torch.Tensor], inj: Optional[Injections] = None, *,
                      generator: torch.Generator, **kw: Any) -> Any:
        raise NotImplementedError

    def decode(self, tokens: Any) -> torch.Tensor:
        """Tokens -> images in [-1, 1]."""
        raise NotImplementedError

    @torch.inference_mode()
    def sample_images(self, labels: torch.Tensor, *, seed: int = 0, batch_size: int = 64, progress: bool = False,
                      injections: Any = None, **kw: Any) -> torch.Tensor:
        """uint8 images [N, 3, H, W] for ``labels`` [N], drawn in batches from one generator seeded with ``seed``.
        ``injections``: an :class:`Injections`, or a callable ``labels_of_the_batch -> Injections``."""
        from tqdm import tqdm

        labels = torch.as_tensor(labels, dtype=torch.long).view(-1)
        g = torch.Generator(device=self.device)
        g.manual_seed(int(seed))
        settings = {**self.sample_defaults, **kw}
        out = []
        for i in tqdm(range(0, labels.shape[0], batch_size), desc=f"sample {self.name}", disable=not progress,
                      leave=False):
            lab = labels[i:i + batch_size].to(self.device)
            inj = injections(lab) if callable(injections) else injections
            tok = self.sample_tokens(lab, inj, generator=g, **settings)
            out.append(to_uint8(self.decode(tok)).cpu())
        return torch.cat(out) if out else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


BACKBONES: Registry[Backbone] = Registry("backbone")  # filled by genvpt/backbones/__init__.py
register_backbone = BACKBONES.register  # register_backbone(name, cls, *, replace=False)
backbone_class = BACKBONES.lookup
