"""``dataset`` backend: the captions the prepared dataset already carries (the shapes dataset's attribute captions,
or a parquet dataset's caption column). The offline default: no model, no weights."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .params import CaptionParams
from .run import CaptionError, Sample, Sink

__all__ = ["DatasetCaptions"]


class DatasetCaptions:
    """Copies each sample's own caption. Samples without one are listed in ``no_caption`` (caption_dataset gives
    them the sentence level) unless ``caption.fallback`` is ``error``, which makes them an error."""

    def __init__(self, params: CaptionParams | None = None, chunk: int = 4096):
        self.captioner = "dataset"
        self.settings: dict = {}
        self.chunk = chunk
        self.fallback = (params or CaptionParams()).fallback
        self.no_caption: list[str] = []

    def caption(self, prepared_dir: Path, todo: Sequence[Sample], sink: Sink) -> None:
        missing = [s.key for s in todo if not (s.caption or "").strip()]
        if missing and self.fallback != "sentence":
            raise CaptionError(
                f"{prepared_dir}: {len(missing)} of {len(todo)} samples have no caption of their own (e.g. {missing[:3]}); "
                f"caption.backend: dataset needs a dataset with captions (shapes, or parquet with caption_column). "
                f"Use caption.backend: transformers (BLIP-2) or lavis instead, or caption.fallback: sentence."
            )
        self.no_caption = missing
        have = [s for s in todo if (s.caption or "").strip()]
        for i in range(0, len(have), self.chunk):
            sink([(s.key, str(s.caption)) for s in have[i : i + self.chunk]])
