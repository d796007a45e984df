"""PGN (Prompt Generation Networks) and its classification baselines on a frozen CLIP, plus prompt inversion.

* :mod:`genvpt.classify.vit`: the open_clip ViT run with prompt tokens appended after ``[cls, patches]``;
* :mod:`genvpt.classify.method` + ``methods/``: the method protocol and registry (``pgn``, ``iip``, ``vp``,
  ``linear_probe``, ``zero_shot``, ``finetune``, ``lora``);
* :mod:`genvpt.classify.train`: one training loop (SGD, warm-up + cosine, the official augmentations, resumable,
  frozen towers verified) and :func:`~genvpt.classify.train.evaluate`;
* :mod:`genvpt.classify.inversion`: token prompts -> RGB patches through conv1's pseudo-inverse, and their accuracy;
* :mod:`genvpt.classify.data`: prepared shards -> tensors; :mod:`genvpt.classify.params`: the ``classify`` params
  section (import-light).

Submodules are imported on use (this package's import pulls in nothing heavy).
"""
