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
from genvpt.datasets import build_dataset, iter_split, load_split
from genvpt.datasets.prepare import PrepareError, prepare_dataset
from genvpt.io import sha256_file

SPLITS = ("train", "val", "test")

TINY = DatasetParams(name="shapes", image_size=16, seed=2, shapes={"images_per_class": 5, "domain": "textured"})
PREP = PrepareParams(shard_maxcount=16)


def _files(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


def test_round_trip_identical_records(tmp_path):
    out = tmp_path / "prep"
    stats = prepare_dataset(TINY, PREP, out)
    # 5 per class: round(5 * 0.2) = 1 to val and 1 to test, 3 to train
    assert {s: stats["splits"][s]["images"] for s in SPLITS} == {"train": 36, "val": 12, "test": 12}
    assert {s: stats["splits"][s]["origin"] for s in SPLITS} == dict.fromkeys(SPLITS, "carved")
    assert all(stats["splits"][s]["per_class"] == {c: n // 12 for c in stats["splits"][s]["per_class"]}
               and len(stats["splits"][s]["per_class"]) == 12 for s, n in (("train", 36), ("val", 12), ("test", 12)))
    assert stats["splits"]["train"]["shards"] == 3  # 36 / maxcount 16
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["test", "train", "val"]
    # read back with webdataset: the same pixels, labels and captions as the dataset renders
    by_id = {it.source_id: it.load() for it in build_dataset(TINY).items()}
    samples = [s for split in SPLITS for s in iter_split(out, split)]
    assert len(samples) == 60 and len({s["key"] for s in samples}) == 60
    assert len({s["source_id"] for s in samples}) == 60  # the three splits are disjoint
    for s in samples:
        rec = by_id[s["source_id"]]
        assert np.array_equal(np.asarray(s["image"]), np.asarray(rec.image))
        assert (s["label"], s["class_name"], s["caption"]) == (rec.label, rec.class_name, rec.caption)
        assert "." not in s["key"]
    man = pq.read_table(out / "manifest.parquet").to_pandas()
    assert set(man.columns) >= {"key", "shard", "label", "class_name", "caption", "width", "height", "sha256"}
    assert len(man) == 60 and (man.width == 16).all()
    assert man.split.value_counts().to_dict() == {"train": 36, "val": 12, "test": 12}
    assert set(man[man.split == "test"].shard) == {"shard-000000.tar"}
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
    assert stats["rejected"] == 1 and sum(stats["splits"][s]["images"] for s in SPLITS) == 12
    # the file name ships train; val and test are carved from it
    assert [stats["splits"][s]["origin"] for s in SPLITS] == ["shipped", "carved", "carved"]
    assert all(stats["splits"][s]["images"] > 0 for s in SPLITS)
    samples = [s for split in SPLITS for s in iter_split(out, split)]
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
    assert stats["listed"] == 36 and stats["classes"] == 12
    a = sorted((s["source_id"], s["caption"]) for s in iter_split(tmp_path / "first", "train"))
    b = sorted(s["caption"] for split in SPLITS for s in iter_split(tmp_path / "second", split))
    assert sorted(c for _, c in a) == b


def test_webdataset_source_keeps_a_prepared_folders_splits(tmp_path):
    first = prepare_dataset(TINY, PREP, tmp_path / "first")
    p = DatasetParams(name="webdataset", path=str(tmp_path / "first"), image_size=16, val_fraction=0.5,
                      test_fraction=0.3)
    second = prepare_dataset(p, PREP, tmp_path / "second")
    # train/, val/, test/ folders ship the splits: nothing is carved, the fractions do not apply
    assert [second["splits"][s]["origin"] for s in SPLITS] == ["shipped"] * 3
    for s in SPLITS:
        assert second["splits"][s]["images"] == first["splits"][s]["images"]
        assert sorted(r["caption"] for r in iter_split(tmp_path / "first", s, decode=False)) == \
            sorted(r["caption"] for r in iter_split(tmp_path / "second", s, decode=False))


def test_corrupt_shard_error_names_the_shard(tmp_path):
    from genvpt.datasets import ShardError

    out = tmp_path / "prep"
    prepare_dataset(TINY, PREP, out)
    shard = sorted((out / "train").glob("*.tar"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    with pytest.raises(ShardError, match=shard.name):
        list(iter_split(out, "train"))


def _letter_png(letter: str, i: int, size: int = 28) -> bytes:
    """A real rendered letter (PIL's bundled font), shifted and scaled a little per index."""
    from PIL import ImageDraw, ImageFont

    img = Image.new("L", (size, size), 0)
    font = ImageFont.load_default(size=16 + i % 5)
    ImageDraw.Draw(img).text((5 + i % 4, 3 + (i // 4) % 4), letter, fill=255, font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _hf_train_only_export(d: Path, letters: str = "ABC", per_class: int = 10) -> Path:
    """A Hugging Face `datasets` export of one split, saved as just ``train.parquet`` (ClassLabel metadata)."""
    rows = [{"image": {"bytes": _letter_png(c, i), "path": f"{c}{i}.png"}, "label": k}
            for i in range(per_class) for k, c in enumerate(letters)]
    table = pa.Table.from_pylist(rows)
    meta = {"info": {"features": {"label": {"_type": "ClassLabel", "names": list(letters)}}}}
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()}), d / "train.parquet")
    return d


def test_train_only_parquet_export_gets_val_and_test_carved(tmp_path):
    """User report: a HF export saved as ``train.parquet`` was prepared with an empty val split, and the pipeline
    stopped at tokenize ("split 'val' of data/prepared/target is empty")."""
    src = _hf_train_only_export(tmp_path / "letters")
    p = DatasetParams(name="parquet", path=str(src), image_size=16, val_fraction=0.2, test_fraction=0.2)
    out = tmp_path / "prep"
    stats = prepare_dataset(p, PREP, out)
    splits = {s: load_split(out, s) for s in ("train", "val", "test")}  # what tokenize loads: none may be empty
    assert {s: len(d) for s, d in splits.items()} == {"train": 18, "val": 6, "test": 6}
    for d in splits.values():  # stratified: every letter in every split, in equal numbers
        assert d.labels.bincount(minlength=3).tolist() == [len(d) // 3] * 3
    ids = {s: {r["source_id"] for r in iter_split(out, s, decode=False)} for s in splits}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert stats["splits"]["train"]["origin"] == "shipped"
    assert stats["splits"]["val"]["origin"] == stats["splits"]["test"]["origin"] == "carved"
    # seeded: the same params carve the same images, another seed other ones
    again = prepare_dataset(p, PREP, tmp_path / "again")
    assert again == stats and _files(tmp_path / "again") == _files(out)
    other = prepare_dataset(p.model_copy(update={"seed": 5}), PREP, tmp_path / "other")
    assert {r["source_id"] for r in iter_split(tmp_path / "other", "test", decode=False)} != ids["test"]
    assert other["splits"]["test"]["images"] == 6


def _split_tree(root: Path, splits: dict[str, int], classes=("cats", "dogs")) -> Path:
    """root/<split>/<class>/<i>.png with ``splits[split]`` images per class."""
    rng = np.random.default_rng(3)
    for split, n in splits.items():
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def _source_ids(out: Path, split: str) -> list[str]:
    return sorted(r["source_id"] for r in iter_split(out, split, decode=False))


def test_imagefolder_train_and_test_shipped_val_carved_from_train(tmp_path):
    root = _split_tree(tmp_path / "tree", {"train": 10, "test": 3})
    p = DatasetParams(name="imagefolder", path=str(root), image_size=8, val_fraction=0.2, test_fraction=0.4)
    stats = prepare_dataset(p, PREP, tmp_path / "prep")
    assert [stats["splits"][s]["origin"] for s in SPLITS] == ["shipped", "carved", "shipped"]
    # test is the shipped test/ folder as is (test_fraction does not apply); val is 2 of each class's 10 train images
    assert _source_ids(tmp_path / "prep", "test") == sorted(f"test/{c}/{i}.png" for c in ("cats", "dogs") for i in range(3))
    assert {s: stats["splits"][s]["per_class"] for s in SPLITS} == {
        "train": {"cats": 8, "dogs": 8}, "val": {"cats": 2, "dogs": 2}, "test": {"cats": 3, "dogs": 3}}
    assert all(sid.startswith("train/") for sid in _source_ids(tmp_path / "prep", "val"))


def test_imagefolder_train_only_gets_val_and_test(tmp_path):
    root = _split_tree(tmp_path / "tree", {"train": 10})
    p = DatasetParams(name="imagefolder", path=str(root), image_size=8)
    stats = prepare_dataset(p, PREP, tmp_path / "prep")
    assert [stats["splits"][s]["origin"] for s in SPLITS] == ["shipped", "carved", "carved"]
    assert {s: stats["splits"][s]["images"] for s in SPLITS} == {"train": 12, "val": 4, "test": 4}
    assert len({sid for s in SPLITS for sid in _source_ids(tmp_path / "prep", s)}) == 20


def test_few_shot_subsamples_train_only(tmp_path):
    """val and test are the same images, keys and bytes for every few_shot.images_per_class."""
    base = DatasetParams(name="shapes", image_size=16, seed=4, shapes={"images_per_class": 20})
    man = {}
    for n in (5, 10):
        p = base.model_copy(update={"few_shot": base.few_shot.model_copy(update={"images_per_class": n})})
        stats = prepare_dataset(p, PREP, tmp_path / f"fs{n}")
        assert stats["splits"]["train"]["per_class"] == dict.fromkeys(stats["splits"]["train"]["per_class"], n)
        man[n] = pq.read_table(tmp_path / f"fs{n}" / "manifest.parquet").to_pandas()
    cols = ["key", "source_id", "label", "sha256"]
    for split, size in (("val", 48), ("test", 48)):  # 20 per class: 4 to val, 4 to test
        a, b = (man[n][man[n].split == split][cols].reset_index(drop=True) for n in (5, 10))
        assert len(a) == size and a.equals(b), split
    for split in ("val", "test"):
        assert _files(tmp_path / "fs5" / split) == _files(tmp_path / "fs10" / split)
    train5, train10 = (set(man[n][man[n].split == "train"].source_id) for n in (5, 10))
    assert len(train5) == 60 and len(train10) == 120 and not train10 & set(man[5][man[5].split != "train"].source_id)


def test_small_classes_still_get_one_image_per_split(tmp_path):
    # 4 per class: round(4 * 0.1) = 0, but a split with a fraction above 0 gets at least one image of each class
    p = DatasetParams(name="shapes", image_size=16, shapes={"images_per_class": 4}, val_fraction=0.1,
                      test_fraction=0.05)
    stats = prepare_dataset(p, PREP, tmp_path / "prep")
    assert {s: set(stats["splits"][s]["per_class"].values()) for s in SPLITS} == {"train": {2}, "val": {1}, "test": {1}}
    # 2 per class: one stays in train, test is served first, nothing is left for val: a clear error, no output
    with pytest.raises(PrepareError, match=r"val split is empty.*dataset\.val_fraction=0\.1"):
        prepare_dataset(p.model_copy(update={"shapes": p.shapes.model_copy(update={"images_per_class": 2})}), PREP,
                        tmp_path / "tiny")
    assert not (tmp_path / "tiny").exists()


def test_source_block_without_test_split(tmp_path):
    """test_fraction 0 (the source block): no test folder, and train/val are the images they were with train/val only."""
    p = DatasetParams(name="shapes", image_size=16, seed=1, val_fraction=0.1, test_fraction=0.0,
                      shapes={"images_per_class": 10, "domain": "flat"})
    stats = prepare_dataset(p, PREP, tmp_path / "src")
    assert sorted(d.name for d in (tmp_path / "src").iterdir() if d.is_dir()) == ["train", "val"]
    assert stats["splits"]["test"] == {"images": 0, "shards": 0, "per_class": {}, "origin": "carved"}
    assert stats["splits"]["val"]["images"] == 12
    # carving test takes from train only: val keeps the same images whatever test_fraction is
    with_test = prepare_dataset(p.model_copy(update={"test_fraction": 0.2}), PREP, tmp_path / "with_test")
    assert with_test["splits"]["test"]["images"] == 24
    assert _source_ids(tmp_path / "with_test", "val") == _source_ids(tmp_path / "src", "val")
