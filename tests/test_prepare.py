"""The prepare stage: shard round trip, byte-identical outputs, bad inputs, atomicity, users' formats."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from genvpt.config import DatasetParams, PrepareParams
from genvpt.datasets import iter_split, load_split
from genvpt.datasets.prepare import PrepareError, prepare_dataset
from genvpt.datasets.shapes import ShapesDataset
from genvpt.io import sha256_file

TINY = DatasetParams(name="shapes", image_size=16, seed=2, shapes={"images_per_class": 5, "domain": "textured"})
PREP = PrepareParams(shard_maxcount=16)


def _files(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


def test_round_trip_identical_records(tmp_path):
    out = tmp_path / "prep"
    stats = prepare_dataset(TINY, PREP, out)
    assert stats["splits"]["train"]["images"] == 48 and stats["splits"]["val"]["images"] == 12
    assert stats["splits"]["train"]["shards"] == 3  # 48 / maxcount 16
    # read back with webdataset: the same pixels, labels and captions as the dataset renders
    ds = ShapesDataset(16, "textured", 5, seed=2)
    by_id = {r.source_id: r for r in ds}
    samples = list(iter_split(out, "train")) + list(iter_split(out, "val"))
    assert len(samples) == 60 and len({s["key"] for s in samples}) == 60
    for s in samples:
        rec = by_id[s["source_id"]]
        assert np.array_equal(np.asarray(s["image"]), np.asarray(rec.image))
        assert (s["label"], s["class_name"], s["caption"]) == (rec.label, rec.class_name, rec.caption)
        assert "." not in s["key"]
    man = pq.read_table(out / "manifest.parquet").to_pandas()
    assert set(man.columns) >= {"key", "shard", "label", "class_name", "caption", "width", "height", "sha256"}
    assert len(man) == 60 and (man.width == 16).all()
    split = load_split(out, "val")
    assert split.images.shape == (12, 3, 16, 16) and split.images.dtype.is_floating_point is False
    assert split.class_names == json.loads((out / "classes.json").read_text())


def test_identical_params_give_byte_identical_outputs(tmp_path):
    prepare_dataset(TINY, PREP, tmp_path / "a")
    prepare_dataset(TINY, PREP, tmp_path / "b")
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa == fb and any(k.endswith(".tar") for k in fa)
    prepare_dataset(TINY.model_copy(update={"seed": 3}), PREP, tmp_path / "c")
    assert _files(tmp_path / "c") != fa


def test_crash_leaves_previous_output_untouched(tmp_path, monkeypatch):
    out = tmp_path / "prep"
    prepare_dataset(TINY, PREP, out)
    before = _files(out)
    import genvpt.datasets.prepare as prep_mod

    calls = {"n": 0}
    real = prep_mod.encode_png

    def flaky(img):
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("simulated crash")
        return real(img)

    monkeypatch.setattr(prep_mod, "encode_png", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_dataset(TINY.model_copy(update={"seed": 9}), PREP, out)
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["prep"]  # no temp folders left behind


def _imagefolder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(d / f"ok{i}.jpg")
    # convertible inputs
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(root / "cats" / "cmyk.jpg")
    Image.new("L", (20, 20), 128).save(root / "cats" / "gray.png")
    Image.new("P", (20, 20), 3).save(root / "dogs" / "palette.png")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(root / "dogs" / "alpha.png")
    # bad inputs
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "cats" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "dogs" / "notes.png").write_text("this is not an image")
    (root / "dogs" / "zero.jpg").write_bytes(b"")
    (root / "birds").mkdir()  # empty class folder
    (root / "dogs" / "README.txt").write_text("ignored: not an image extension")
    return root


def test_imagefolder_bad_inputs_recorded(tmp_path):
    root = _imagefolder(tmp_path / "folder")
    p = DatasetParams(name="imagefolder", path=str(root), image_size=16, val_fraction=0.25)
    out = tmp_path / "prep"
    stats = prepare_dataset(p, PrepareParams(max_reject_fraction=0.3), out)
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    reasons = {Path(r["path"]).name: r["reason"] for r in rejects}
    assert set(reasons) == {"truncated.jpg", "notes.png", "zero.jpg", "birds"}
    assert "not an image" in reasons["notes.png"] and "empty" in reasons["birds"] and "0 bytes" in reasons["zero.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "unreadable" in reasons["truncated.jpg"]
    assert stats["classes"] == 2 and stats["rejected"] == 4
    man = pq.read_table(out / "manifest.parquet").to_pandas()
    names = {s.split("/")[-1] for s in man.source_id}
    assert {"cmyk.jpg", "gray.png", "palette.png", "alpha.png"} <= names  # converted, not rejected
    imgs = load_split(out, "train").images
    assert imgs.shape[1:] == (3, 16, 16)


def test_too_many_rejects_fail_with_clear_message(tmp_path):
    root = _imagefolder(tmp_path / "folder")
    p = DatasetParams(name="imagefolder", path=str(root), image_size=16)
    with pytest.raises(PrepareError, match=r"4 of \d+ inputs rejected.*max_reject_fraction") as err:
        prepare_dataset(p, PrepareParams(max_reject_fraction=0.05), tmp_path / "prep")
    assert "notes.png" in str(err.value)
    assert not (tmp_path / "prep").exists()


def test_imagefolder_missing_path_is_clear(tmp_path):
    p = DatasetParams(name="imagefolder", path=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_dataset(p, PREP, tmp_path / "prep")


def test_parquet_hf_export(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(buf, "PNG")
        rows.append({"image": {"bytes": buf.getvalue(), "path": f"{i}.png"}, "label": i % 3, "text": f"caption {i}"})
    rows.append({"image": {"bytes": b"garbage", "path": "bad.png"}, "label": 0, "text": None})
    table = pa.Table.from_pylist(rows)
    meta = {"info": {"features": {"label": {"_type": "ClassLabel", "names": ["ant", "bee", "cow"]}}}}
    table = table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    p = DatasetParams(name="parquet", path=str(tmp_path / "data"), image_size=8, caption_column="text")
    out = tmp_path / "prep"
    stats = prepare_dataset(p, PrepareParams(max_reject_fraction=0.2), out)
    assert stats["rejected"] == 1 and stats["splits"]["train"]["images"] == 12  # file name fixes the split
    samples = list(iter_split(out, "train"))
    assert {s["class_name"] for s in samples} == {"ant", "bee", "cow"}
    assert all(s["caption"].startswith("caption") for s in samples)


def test_parquet_missing_column_names_file(tmp_path):
    pq.write_table(pa.table({"img": [b"x"], "label": [0]}), tmp_path / "x.parquet")
    p = DatasetParams(name="parquet", path=str(tmp_path / "x.parquet"))
    with pytest.raises(KeyError, match=r"x.parquet.*image"):
        prepare_dataset(p, PREP, tmp_path / "prep")


def test_webdataset_source_reads_existing_shards(tmp_path):
    prepare_dataset(TINY, PREP, tmp_path / "first")
    p = DatasetParams(name="webdataset", path=str(tmp_path / "first" / "train"), image_size=16)
    stats = prepare_dataset(p, PREP, tmp_path / "second")
    assert stats["listed"] == 48 and stats["classes"] == 12
    a = sorted((s["source_id"], s["caption"]) for s in iter_split(tmp_path / "first", "train"))
    b = sorted(s["caption"] for split in ("train", "val") for s in iter_split(tmp_path / "second", split))
    assert sorted(c for _, c in a) == b


def test_corrupt_shard_error_names_the_shard(tmp_path):
    from genvpt.datasets import ShardError

    out = tmp_path / "prep"
    prepare_dataset(TINY, PREP, out)
    shard = sorted((out / "train").glob("*.tar"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    with pytest.raises(ShardError, match=shard.name):
        list(iter_split(out, "train"))
