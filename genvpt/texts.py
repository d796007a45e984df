"""Multi-level tuning texts (MVP's semantic refinement): per sample, three texts of increasing detail.

* ``label``: the class name ("star"; underscores become spaces);
* ``sentence``: the template of params ``caption.sentence_template`` filled with the class name
  (default "a photo of {class_name}", the paper's);
* ``caption``: the sample's caption from ``captions.parquet`` (the caption stage: BLIP-2 or the dataset's own).

Where the join happens: here, by sample key. The prepare stage gives every image a key (``train_0000042``) that the
tokenize stage copies into the token shards (``TokenData.keys``) and the caption stage into ``captions.parquet``.
A training loop that reads token shards builds one :class:`TextBank` (class names + captions.parquet + template)
before training and calls ``bank.texts(batch_keys, batch_labels)`` for each batch; nothing is joined on disk, so
captions can be regenerated (other captioner/settings) without re-tokenizing. A key without a caption is an error
(the captions were made for another prepared dataset); an empty caption falls back to the sentence.

Because the CLIP is frozen, text features never change: :class:`TextFeatureCache` encodes each distinct text once.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

log = logging.getLogger(__name__)

__all__ = ["LEVELS", "TuningTexts", "TextBank", "TextFeatureCache", "load_text_bank"]

LEVELS = ("label", "sentence", "caption")


@dataclass(frozen=True)
class TuningTexts:
    """The three levels for a batch; index i of every list belongs to sample i."""

    label: list[str]
    sentence: list[str]
    caption: list[str]

    def level(self, name: str) -> list[str]:
        if name not in LEVELS:
            raise KeyError(f"unknown text level {name!r}; levels: {LEVELS}")
        return getattr(self, name)

    def __len__(self) -> int:
        return len(self.label)


def _readable(name: str) -> str:
    return name.replace("_", " ").strip()


class TextBank:
    """Class names + captions by key + sentence template -> :class:`TuningTexts` for any (keys, labels) batch."""

    def __init__(
        self,
        class_names: Sequence[str],
        captions: Optional[Mapping[str, str]] = None,
        template: str = "a photo of {class_name}",
        *,
        source: str = "<captions>",
        on_missing: str = "error",
    ):
        if "{class_name}" not in template:
            raise ValueError(f"sentence template {template!r} lacks '{{class_name}}'")
        if on_missing not in ("error", "sentence"):
            raise ValueError("on_missing must be 'error' or 'sentence'")
        self.class_names = [_readable(c) for c in class_names]
        self.sentences = [template.format(class_name=c) for c in self.class_names]
        self.captions = dict(captions or {})
        self.template = template
        self.source = source
        self.on_missing = on_missing
        self._warned_empty = False

    def label_text(self, label: int) -> str:
        return self.class_names[int(label)]

    def sentence(self, label: int) -> str:
        return self.sentences[int(label)]

    def texts(self, keys: Sequence[str], labels: Sequence[int] | torch.Tensor) -> TuningTexts:
        labels = labels.tolist() if isinstance(labels, torch.Tensor) else [int(x) for x in labels]
        if len(keys) != len(labels):
            raise ValueError(f"{len(keys)} keys but {len(labels)} labels")
        bad = [l for l in labels if not 0 <= l < len(self.class_names)]
        if bad:
            raise ValueError(f"labels {sorted(set(bad))[:5]} outside 0..{len(self.class_names) - 1}")
        caps: list[str] = []
        missing, empty = [], 0
        for k, l in zip(keys, labels):
            c = self.captions.get(k)
            if c is None:
                missing.append(k)
                c = self.sentences[l]
            elif not c.strip():
                empty += 1
                c = self.sentences[l]
            caps.append(c)
        if missing and self.on_missing == "error":
            raise KeyError(
                f"{len(missing)} keys have no caption in {self.source} (e.g. {missing[:3]}): the captions were made for "
                f"another prepared dataset; rerun the caption stage"
            )
        if empty and not self._warned_empty:
            log.warning("empty captions in %s replaced by the sentence level", self.source)
            self._warned_empty = True
        return TuningTexts(label=[self.class_names[l] for l in labels], sentence=[self.sentences[l] for l in labels], caption=caps)


def load_text_bank(
    class_names: Sequence[str],
    captions_path: Optional[str | os.PathLike],
    template: str = "a photo of {class_name}",
    on_missing: str = "error",
) -> TextBank:
    """A TextBank from a captions.parquet (``None``: no captions; the caption level then falls back to sentences)."""
    if captions_path is None:
        return TextBank(class_names, None, template, source="<no captions>", on_missing="sentence")
    from .captions.run import read_captions

    return TextBank(class_names, read_captions(captions_path), template, source=str(Path(captions_path)), on_missing=on_missing)


class TextFeatureCache:
    """Frozen-CLIP text features, each distinct text encoded once (``inference_mode``, batched)."""

    def __init__(self, clip, batch_size: Optional[int] = None):
        self.clip = clip
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """[B, D] normalised features on the CLIP's device (constants: no autograd graph)."""
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            feats = self.clip.embed_texts(new, self.batch_size)
            self._cache.update(zip(new, feats))
        return torch.stack([self._cache[t] for t in texts]).to(self.clip.device)
