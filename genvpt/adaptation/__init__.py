"""Adapting frozen generators: one interface for every backbone (genvpt/backbones) and every method.

* ``method``: the method protocol and its registry (``register_method``); ``methods/``: one module per method
  (vpt, mvp, mvp_t2i, prefilled, lora, adapter, finetune, scratch);
* ``params``: the ``adaptation`` section of params.yaml (configurations name backbone, method and options);
* ``train``: one training loop; ``sampler``: sampling from a trained file; ``run``: the adapt stage's library side;
* ``positions``: MVP's frame positions; ``semantic``: the CLIP loss and state hashes; ``memory``: peak memory.
"""
from .method import METHODS, Method, MethodInfo, method_class, register_method
from .params import AdaptationConfig, AdaptationParams, TrainSettings

__all__ = ["METHODS", "Method", "MethodInfo", "method_class", "register_method", "AdaptationConfig",
           "AdaptationParams", "TrainSettings"]
