"""The built-in classification methods: one module each, one registry line each."""
from ..method import register_method
from .finetune import Finetune
from .iip import IIP
from .linear_probe import LinearProbe
from .lora import LoRA
from .pgn import PGN
from .vp import VisualPrompt
from .zero_shot import ZeroShot

register_method("pgn", PGN)
register_method("iip", IIP)
register_method("vp", VisualPrompt)
register_method("linear_probe", LinearProbe)
register_method("zero_shot", ZeroShot)
register_method("finetune", Finetune)
register_method("lora", LoRA)
