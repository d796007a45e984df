"""More targets (params ``extra_targets``; stage ``extra_target@<name>``): the per-target stages (prepare, tokenize,
adapt, sample, sample_frozen, score) rerun for another target dataset beside the pipeline's own, e.g. a target of
classes the source never had, where only class-conditioned prompts can produce the right class. The params model
lives in :mod:`genvpt.targets.params` (import-light), the stage's library in :mod:`genvpt.targets.run`."""
from .params import ExtraTarget, extra_target_errors

__all__ = ["ExtraTarget", "extra_target_errors"]
