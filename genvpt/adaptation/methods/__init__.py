"""The built-in adaptation methods: one module each, one registry line each."""
from ..method import register_method
from .adapter import Adapter
from .finetune import Finetune
from .lora import LoRA
from .mvp import MVP
from .mvp_t2i import MVPT2I
from .prefilled import Prefilled
from .scratch import Scratch
from .vpt import VPT

register_method("vpt", VPT)
register_method("mvp", MVP)
register_method("mvp_t2i", MVPT2I)
register_method("prefilled", Prefilled)
register_method("lora", LoRA)
register_method("adapter", Adapter)
register_method("finetune", Finetune)
register_method("scratch", Scratch)
