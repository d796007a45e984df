"""Multi-level tuning texts joined by key (genvpt/texts.py)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from genvpt.texts import LEVELS, TextBank, TextFeatureCache, load_text_bank

CLASSES = ["circle", "golden_retriever", "star"]


def test_three_levels_joined_by_key():
    bank = TextBank(CLASSES, {"k1": "a red circle", "k2": "a dog on grass", "k3": ""}, "a photo of {class_name}")
    t = bank.texts(["k2", "k1", "k3"], torch.tensor([1, 0, 2]))
    assert t.label == ["golden retriever", "circle", "star"]
    assert t.sentence == ["a photo of golden retriever", "a photo of circle", "a photo of star"]
    assert t.caption == ["a dog on grass", "a red circle", "a photo of star"]  # empty caption -> sentence
    assert [t.level(x) for x in LEVELS] == [t.label, t.sentence, t.caption] and len(t) == 3


def test_missing_key_is_an_error_naming_the_file_unless_asked_to_fall_back():
    bank = TextBank(CLASSES, {"k1": "x"}, source="data/captions/target/captions.parquet")
    with pytest.raises(KeyError, match="captions.parquet"):
        bank.texts(["k1", "zz"], [0, 1])
    lenient = TextBank(CLASSES, {"k1": "x"}, "a {class_name}", on_missing="sentence")
    assert lenient.texts(["zz"], [2]).caption == ["a star"]
    with pytest.raises(ValueError, match="outside"):
        bank.texts(["k1"], [7])
    with pytest.raises(ValueError, match="class_name"):
        TextBank(CLASSES, {}, "a photo")


def test_load_text_bank_reads_captions_parquet(tmp_path):
    path = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"key": ["a", "b"], "split": ["train", "val"], "caption": ["c-a", "c-b"],
                             "captioner": ["dataset"] * 2, "settings": ["{}"] * 2}), path)
    bank = load_text_bank(CLASSES, path, "a photo of {class_name}")
    assert bank.texts(["b", "a"], [0, 0]).caption == ["c-b", "c-a"]
    with pytest.raises(FileNotFoundError, match="caption stage"):
        load_text_bank(CLASSES, tmp_path / "nope.parquet")
    assert load_text_bank(CLASSES, None).texts(["q"], [2]).caption == ["a photo of star"]


class _CountingClip:
    device = torch.device("cpu")

    def __init__(self):
        self.encoded: list[str] = []

    def embed_texts(self, texts, batch_size=None):
        self.encoded += list(texts)
        return torch.stack([torch.full((4,), float(len(t))) for t in texts])


def test_text_feature_cache_encodes_each_text_once():
    clip = _CountingClip()
    cache = TextFeatureCache(clip)
    a = cache.features(["ab", "abc", "ab"])
    b = cache.features(["abc", "abcd"])
    assert clip.encoded == ["ab", "abc", "abcd"] and len(cache) == 3
    assert a[:, 0].tolist() == [2, 3, 2] and b[:, 0].tolist() == [3, 4]
