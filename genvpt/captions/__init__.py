"""Captions for prepared datasets: one ``captions.parquet`` (key, split, caption, captioner, settings) per dataset.

Backends (params ``caption.backend``), all behind :func:`genvpt.captions.run.caption_dataset`:

* ``dataset``: the captions the prepared shards already carry (the shapes dataset's attribute captions);
  samples without one (image folders, ``digits``) fall back to the sentence level (``caption.fallback``);
* ``transformers``: BLIP-2 through ``Blip2ForConditionalGeneration`` + ``Blip2Processor`` (genvpt/captions/hf_blip2.py);
* ``lavis``: LAVIS ``blip2_opt`` in its own environment, run as a subprocess (genvpt/captions/lavis_backend.py,
  the worker genvpt/captions/lavis_worker.py, requirements genvpt/captions/lavis_requirements.txt).

Imports stay lazy so that ``genvpt.captions.params`` (read by genvpt/config.py) costs nothing.
"""
from __future__ import annotations

__all__ = ["caption_dataset", "read_captions", "CaptionError", "CaptionerUnavailable", "MissingWeightsError",
           "caption_record", "caption_note"]


def __getattr__(name: str):
    if name in __all__:
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
