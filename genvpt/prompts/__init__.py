"""Prompt tuning of frozen generators: MVP's multi-scale frame prompts on VAR and its baselines.

* ``positions``: where the frame prompts sit on every scale (the paper's outermost frames / L-shapes, Table 5 variants);
* ``mvp``: the prompt modules, LoRA / fine-tuning set-up, the differentiable semantic loss;
* ``train``: one training loop for every method; ``sampler``: sampling from a trained configuration;
* ``params``: the ``prompts`` section of params.yaml (kept import-light: genvpt/config.py imports it).
"""
from .params import METHODS, PromptConfig, PromptsParams

__all__ = ["METHODS", "PromptConfig", "PromptsParams"]
