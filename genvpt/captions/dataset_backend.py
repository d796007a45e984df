"""``dataset`` backend: the captions the prepared dataset already carries (the shapes dataset's attribute captions,
or a parquet dataset's caption column). The offline default: no model, no weights."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .params import CaptionParams
from .run import CaptionError, Sample, Sink

__all__ = ["DatasetCaptions"]


class DatasetCaptions:
    def __init__(self, params: CaptionParams | None = None, chunk: int = 4096):
        self.captioner = "dataset"
        self.settings: dict = {}
        self.chunk = chunk

    def caption(self, prepared_dir: Path, todo: Sequence[Sample], sink: Sink) -> None:
        missing = [s.key for s in todo if not (s.caption or "").strip()]
        if missing:
            raise CaptionError(
                f"{prepared_dir}: {len(missing)} of {len(todo)} samples have no caption of their own (e.g. {missing[:3]}); "
                f"caption.backend: dataset needs a dataset with captions (shapes, or parquet with caption_column). "
                f"Use caption.backend: transformers (BLIP-2) or lavis instead."
            )
        for i in range(0, len(todo), self.chunk):
            sink([(s.key, str(s.caption)) for s in todo[i : i + self.chunk]])
