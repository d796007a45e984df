"""A sample set on disk (genvpt.sampling): one images.tar of PNG members beside record.json, read back exactly;
damaged or mismatched shards are errors naming the file; sets made by hand as images/*.png still read."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genvpt.sampling import IMAGES_SHARD, SampleSet, write_sample_images


def _images(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 6, 7), generator=g, dtype=torch.uint8)


def _set(d, imgs, n=None):
    d.mkdir(parents=True, exist_ok=True)
    write_sample_images(d, imgs)
    (d / "record.json").write_text(json.dumps({"name": "x", "n": len(imgs) if n is None else n,
                                               "labels": [0] * len(imgs)}))
    return d


def test_shard_round_trip_same_bytes_and_extract(tmp_path):
    imgs = _images()
    d = _set(tmp_path / "a", imgs)
    s = SampleSet(d)
    assert torch.equal(s.load_images(), imgs)
    again = _set(tmp_path / "b", imgs)
    assert (again / IMAGES_SHARD).read_bytes() == (d / IMAGES_SHARD).read_bytes()  # deterministic headers
    out = s.extract(tmp_path / "png")
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(5)]
    with Image.open(out / "000003.png") as im:
        assert np.array_equal(np.asarray(im), imgs[3].permute(1, 2, 0).numpy())


def test_damaged_or_short_shards_are_errors_naming_the_file(tmp_path):
    d = _set(tmp_path / "short", _images(3), n=4)
    with pytest.raises(ValueError, match=r"short/images\.tar: 3 members .*n=4"):
        SampleSet(d)
    d = _set(tmp_path / "cut", _images(4))
    data = (d / IMAGES_SHARD).read_bytes()
    (d / IMAGES_SHARD).write_bytes(data[: len(data) // 3])  # a write cut short
    with pytest.raises(ValueError, match=r"cut/images\.tar"):
        SampleSet(d).load_images()
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "record.json").write_text(json.dumps({"name": "x", "n": 1}))
    with pytest.raises(FileNotFoundError, match="neither images.tar nor an images/ folder"):
        SampleSet(tmp_path / "none")


def test_a_folder_of_pngs_made_by_hand_still_reads(tmp_path):
    imgs = _images(3)
    d = tmp_path / "hand"
    (d / "images").mkdir(parents=True)
    for i, im in enumerate(imgs.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(d / "images" / f"{i:06d}.png")
    (d / "record.json").write_text(json.dumps({"name": "x", "n": 3}))
    assert torch.equal(SampleSet(d).load_images(), imgs)
