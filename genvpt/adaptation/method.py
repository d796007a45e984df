"""The adaptation-method protocol and its registry.

A method owns the trainable parameters that adapt a frozen :class:`genvpt.backbones.Backbone` and supplies its
*injections* (prefix prompts, input offsets, a condition embedding; see ``genvpt.backbones.base.Injections``), or
changes the backbone's own weights (LoRA, fine-tuning, training from scratch). The training loop
(genvpt/adaptation/train.py) and the sampler (genvpt/adaptation/sampler.py) call only this interface.

A method is one module with

* ``Params``: a :class:`genvpt.schema.StrictModel` of its options, whose defaults are the only defaults;
* a subclass of :class:`Method` (``name``, ``Params``, the backbone ``features`` it needs, ``trains_backbone``);

and one registry line, ``register_method("name", Class)`` (genvpt/adaptation/methods/__init__.py, or a user's file
before params are validated: the registry is a plain dict).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import nn

from ..backbones.base import Backbone, Injections
from ..registry import Registry
from ..schema import StrictModel
from ..training import adapter_state, load_adapter_state

__all__ = ["Method", "MethodInfo", "METHODS", "register_method", "method_class", "NoParams"]


class NoParams(StrictModel):
    """A method without options."""


@dataclass
class MethodInfo:
    """What a method may need to know about the training data; stored with the trained file so the method can be
    rebuilt for sampling without the data. ``instance_labels``: the class of every training image (instance
    prompts); ``clip_dim``: the CLIP embedding width (text conditioning)."""

    num_classes: int
    class_names: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    instance_labels: list[int] = field(default_factory=list)
    clip_dim: Optional[int] = None

    def to_dict(self) -> dict:
        return {"num_classes": self.num_classes, "class_names": list(self.class_names),
                "sentences": list(self.sentences), "instance_labels": list(self.instance_labels),
                "clip_dim": self.clip_dim}


class Method(nn.Module):
    """Base class. Subclasses build their trainable parameters in ``__init__`` (the backbone is frozen before)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[StrictModel]] = NoParams
    trains_backbone: ClassVar[bool] = False  # its trainable parameters include backbone weights (no frozen check)

    def __init__(self, params: StrictModel, backbone: Backbone, info: MethodInfo, *, seed: int = 0):
        super().__init__()
        self.params = params
        self._backbone = [backbone]  # not a submodule: the method's state is its own parameters
        self.info = info
        self.seed = int(seed)

    # -- what a configuration may ask of a backbone ----------------------------------------------------------------
    @classmethod
    def required_features(cls, params: StrictModel) -> set[str]:
        """Backbone features (``Backbone.features``) this method needs with these options."""
        return set()

    @classmethod
    def needs_clip(cls, params: StrictModel) -> bool:
        return False

    @classmethod
    def needs_captions(cls, params: StrictModel) -> bool:
        return False

    @property
    def backbone(self) -> Backbone:
        return self._backbone[0]

    @property
    def replaces_condition(self) -> bool:
        """True when the method conditions the backbone itself (labels are not passed to it)."""
        return False

    # -- training ---------------------------------------------------------------------------------------------------
    def setup(self, ctx: Any) -> None:
        """Called once before training with the training context (data, CLIP, text embeddings); e.g. initialise
        prompts from the data. Not called when a trained file is loaded for sampling."""

    def injections(self, labels: torch.Tensor, *, idx: Optional[torch.Tensor] = None,
                   drop: Optional[torch.Tensor] = None) -> Injections:
        """The injections of a training batch: ``labels`` [B] (already the null label where ``drop``), ``idx``
        [B] the training-sample indices, ``drop`` [B] bool: condition dropped (guidance's branch is tuned too)."""
        return Injections()

    def extra_losses(self, ctx: Any, *, logits: Optional[torch.Tensor], labels: torch.Tensor, idx: torch.Tensor,
                     drop: torch.Tensor, generator: Optional[torch.Generator]) -> dict[str, torch.Tensor]:
        """Named loss terms added to the backbone's loss (already weighted)."""
        return {}

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        own = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        gen = [(f"generator.{n}", p) for n, p in self.backbone.generator.named_parameters() if p.requires_grad]
        return own + gen

    # -- sampling ---------------------------------------------------------------------------------------------------
    def sampling_injections(self, labels: torch.Tensor) -> Injections:
        """Injections for class-conditional sampling of ``labels`` [B], guidance's unconditional branch included."""
        return Injections()

    # -- saving -----------------------------------------------------------------------------------------------------
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What a trained file stores: the method's own state (parameters and buffers) and the backbone weights
        that train (``generator.*``)."""
        return adapter_state(self, self.backbone.generator, "generator")

    def load_adapter_state_dict(self, sd: dict[str, torch.Tensor], source: str = "<adapter>") -> None:
        load_adapter_state(self, self.backbone.generator, "generator", sd, source)


METHODS: Registry[Method] = Registry("method", builtins="genvpt.adaptation.methods")
register_method = METHODS.register  # register_method(name, cls, *, replace=False): one line per method
method_class = METHODS.lookup
