"""Training data of an adaptation: the target's token maps (one tensor per scale; one scale for AR / MaskGIT), labels,
class names, the class sentences and each sample's caption (the multi-level texts of genvpt/texts.py)."""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import torch

log = logging.getLogger(__name__)

__all__ = ["TrainData", "load_train_data"]


class TrainData:
    """What the loop needs, in memory: token maps per scale [N, pn*pn], labels [N], class names, the sentence of
    each class and the caption of each sample (None where there is none)."""

    def __init__(self, scales: Sequence[torch.Tensor], labels: torch.Tensor, class_names: Sequence[str],
                 captions: Optional[Sequence[Optional[str]]] = None, sentence_template: str = "a photo of {class_name}",
                 sentences: Optional[Sequence[str]] = None):
        self.scales = [s.long() for s in scales]
        self.labels = labels.long()
        self.class_names = list(class_names)
        n = self.labels.shape[0]
        if any(s.shape[0] != n for s in self.scales):
            raise ValueError("every scale needs one token map per label")
        if n and int(self.labels.max()) >= len(self.class_names):
            raise ValueError(f"labels reach {int(self.labels.max())} but there are {len(self.class_names)} classes")
        if n and int(self.labels.min()) < 0:  # would index the class table from its end (or fail deep inside)
            raise ValueError(f"negative label {int(self.labels.min())}; labels index the "
                             f"{len(self.class_names)} classes")
        self.captions = list(captions) if captions is not None else [None] * n
        if len(self.captions) != n:
            raise ValueError(f"{len(self.captions)} captions for {n} samples")
        self.sentences = (list(sentences) if sentences is not None
                          else [sentence_template.format(class_name=c) for c in self.class_names])
        if len(self.sentences) != len(self.class_names):
            raise ValueError(f"{len(self.sentences)} sentences for {len(self.class_names)} classes")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def grid(self) -> list[int]:
        return [round(s.shape[1] ** 0.5) for s in self.scales]


def load_train_data(tokens_dir: str | os.PathLike, captions: Optional[str | os.PathLike],
                    sentence_template: str, split: str = "train") -> TrainData:
    """The target's training tokens with their multi-level texts (genvpt/texts.py): the class sentences and each
    sample's caption from ``captions`` (captions.parquet, joined by key), or the captions stored with the tokens
    when no captions file is given. The token shards are verified on the way (genvpt/tokenizers/token_shards.py):
    a label outside the class list is an error naming the shard and the sample. Whether the target's classes fit the
    backbone's class table is checked by train_adaptation, which knows the backbone: more target classes than the
    backbone knows is an error naming both counts unless the method replaces the class condition (vpt, mvp_t2i);
    fewer is fine (target class i conditions on the backbone's class i)."""
    from ..texts import TextBank, load_text_bank
    from ..tokenizers.token_shards import load_tokens

    td = load_tokens(tokens_dir, split)
    if captions is not None:
        bank = load_text_bank(td.class_names, captions, sentence_template)
    else:
        own = {k: c for k, c in zip(td.keys, td.captions) if c}
        log.info("no captions file: using the captions stored with the tokens (%d of %d samples)", len(own), len(td.keys))
        bank = TextBank(td.class_names, own, sentence_template, source=f"{tokens_dir} (token shards)", on_missing="sentence")
    texts = bank.texts(td.keys, td.labels)
    try:
        return TrainData(td.scales, td.labels, td.class_names, texts.caption, sentences=bank.sentences)
    except ValueError as err:
        raise ValueError(f"{tokens_dir} ({split}): {err}") from None
