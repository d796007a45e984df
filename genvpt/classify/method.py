"""The classification-method protocol (PGN and its baselines on a frozen CLIP) and its registry.

A method adapts a frozen CLIP (:class:`genvpt.clip.ClipModel`) to classify a target dataset. The default forward
pass is the official PGN one::

    x' = transform_input(x)                       # VP: a learned pixel padding added to the normalised image
    p  = prompt_tokens(x)                         # PGN / IIP: [B, K, D] tokens appended after [cls, patches]
    f  = prompted_features(clip.visual, x', p)    # frozen ViT (genvpt/classify/vit.py), class token -> ln_post -> proj
    logits = logit_scale * cos(f, class_emb)      # class_emb: frozen text tower on the class prompts

``logit_scale`` is the frozen CLIP's (``exp(model.logit_scale)``) and ``class_emb`` the normalised text features of
"This is a photo of a {class_name}" (params ``classify.template``), computed once (the text tower is frozen).
The linear probe replaces the head; fine-tuning and LoRA change the vision tower's weights.

A method is one module in genvpt/classify/methods/ with a ``Params`` (:class:`genvpt.schema.StrictModel`, its
defaults the only defaults) and a :class:`ClassifyMethod` subclass, plus one ``register_method`` line in
genvpt/classify/methods/__init__.py.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry
from ..schema import StrictModel
from ..training import adapter_state, load_adapter_state
from .vit import check_vit, prompted_features

__all__ = ["ClassifyMethod", "NoParams", "METHODS", "register_method", "method_class"]


class NoParams(StrictModel):
    """A method without options."""


class ClassifyMethod(nn.Module):
    """Base class. ``clip`` is frozen before the method is built; subclasses add what trains in ``__init__``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[StrictModel]] = NoParams
    trains_backbone: ClassVar[bool] = False  # the vision tower's own weights train (its hash is not checked)
    needs_vit: ClassVar[bool] = False  # token prompts: an open_clip VisionTransformer tower is required
    trains: ClassVar[bool] = True  # False: nothing trains (zero-shot)

    def __init__(self, params: StrictModel, clip: Any, class_emb: torch.Tensor, *, seed: int = 0):
        super().__init__()
        self.params = params
        self._clip = [clip]  # not a submodule: the method's state is its own parameters
        self.seed = int(seed)
        self.register_buffer("class_emb", F.normalize(class_emb.detach().float().clone(), dim=-1))
        if self.needs_vit:
            check_vit(self.visual)

    # -- the frozen model -------------------------------------------------------------------------------------
    @property
    def clip(self) -> Any:
        return self._clip[0]

    @property
    def visual(self) -> nn.Module:
        return self.clip.model.visual

    @property
    def num_classes(self) -> int:
        return int(self.class_emb.shape[0])

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.model.logit_scale.detach().exp().float()

    def seeded(self, salt: int) -> torch.Generator:
        """A CPU generator for this method's initialisation, a function of (seed, salt)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(salt))

    # -- the forward pass -------------------------------------------------------------------------------------
    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised model input as the tower sees it (VP adds its padding here)."""
        return x

    def prompt_tokens(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """``[B, K, D]`` tokens appended after ``[cls, patches]`` (PGN, IIP), or None."""
        return None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Image features ``[B, E]`` (not normalised) of normalised inputs ``x`` ``[B, 3, H, W]``."""
        return prompted_features(self.visual, self.transform_input(x), self.prompt_tokens(x))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]``: cosine against the class prompts, times the frozen logit scale."""
        return self.logit_scale * F.normalize(features.float(), dim=-1) @ self.class_emb.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    # -- what trains ------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        own = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        tower = [(f"visual.{n}", p) for n, p in self.visual.named_parameters() if p.requires_grad]
        return own + tower

    def describe(self) -> dict[str, Any]:
        """Method-specific facts for the record (e.g. PGN's parameter breakdown)."""
        return {}

    # -- saving -----------------------------------------------------------------------------------------------
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The method's own state (parameters and buffers, the class embeddings included) and the vision-tower
        weights that train (``visual.*``: LoRA's matrices, or every weight when fine-tuning)."""
        return adapter_state(self, self.visual, "visual")

    def load_adapter_state_dict(self, sd: dict[str, torch.Tensor], source: str = "<adapter>") -> None:
        load_adapter_state(self, self.visual, "visual", sd, source)


METHODS: Registry[ClassifyMethod] = Registry("classification method", builtins="genvpt.classify.methods")
register_method = METHODS.register  # register_method(name, cls, *, replace=False): one line per method
method_class = METHODS.lookup
