"""Reliability, data side: bad inputs at every boundary of the data path must give a recorded reject or an error
that names the file (never a raw traceback from deep inside, never silent data loss).

Prepared shards vs manifest.parquet; unsafe tar members; decompression bombs and broken images among a user's
images; parquet schemas; token shards vs meta.json; the target's classes vs the backbone's class table.
Everything is tiny (16 px images, a handful of samples).
"""
from __future__ import annotations

import io
import json
import logging
import re
import shutil
import struct
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from genvpt.config import DatasetParams, PrepareParams
from genvpt.datasets.prepare import prepare_dataset
from genvpt.datasets.shards import ShardError, iter_split, load_split, write_split
from genvpt.tokenizers.token_shards import TokenShardError, iter_tokens, load_tokens, write_token_split

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the stage entry points (stages/*.py) live at the repository root
    sys.path.insert(0, str(ROOT))

SHAPES = DatasetParams(name="shapes", image_size=16, seed=0, val_fraction=0.25,
                       shapes={"domain": "textured", "images_per_class": 4, "classes": ["circle", "star", "ring"]})
PREP = PrepareParams(shard_maxcount=3)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prepared_once(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    prepare_dataset(SHAPES, PREP, out)
    return out


@pytest.fixture
def prepared(prepared_once, tmp_path):
    """A private copy of the tiny prepared dataset (the tests damage it)."""
    return Path(shutil.copytree(prepared_once, tmp_path / "prepared"))


def _members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tf:
        return tf.getmembers()


def _read_tar(shard: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(shard) as tf:
        return [(m, tf.extractfile(m).read() if m.isreg() else None) for m in tf.getmembers()]


def _write_tar(shard: Path, items) -> None:
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT) as tf:
        for m, data in items:
            if data is not None:
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data) if data is not None else None)


def _truncate_before_last_sample(shard: Path) -> int:
    """Cut ``shard`` at the header of its last sample's first member (a 512-byte tar boundary); return how many
    samples are left."""
    ms = _members(shard)
    keys = [m.name.split(".", 1)[0] for m in ms]
    last = keys[-1]
    cut = next(m.offset for m, k in zip(ms, keys) if k == last)
    assert cut % 512 == 0
    with open(shard, "r+b") as fh:
        fh.truncate(cut)
    return len(dict.fromkeys(keys)) - 1


def _png(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _forged_png(width: int, height: int) -> bytes:
    """A few-byte PNG whose header claims ``width`` x ``height`` (1-bit grayscale): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ---- 1. prepared shards are verified against manifest.parquet ------------------------------------------------
def test_shard_truncated_at_a_member_boundary_is_caught(prepared):
    shard = sorted((prepared / "train").glob("*.tar"))[0]
    listed = pq.read_table(prepared / "manifest.parquet").to_pandas()
    n_listed = int(((listed.split == "train") & (listed.shard == shard.name)).sum())
    assert _truncate_before_last_sample(shard) == n_listed - 1  # still a valid tar: only the count betrays it
    with pytest.raises(ShardError, match=rf"{shard.name}.*1 of the {n_listed} samples.*missing.*train_"):
        load_split(prepared, "train")
    with pytest.raises(ShardError, match=shard.name):  # streaming readers too
        list(iter_split(prepared, "train", decode=False))


def test_replaced_png_fails_the_manifest_sha256(prepared):
    shard = sorted((prepared / "val").glob("*.tar"))[0]
    items = _read_tar(shard)
    victim = next(m for m, _ in items if m.name.endswith(".png"))
    _write_tar(shard, [(m, _png(99) if m.name == victim.name else d) for m, d in items])
    key = victim.name.split(".")[0]
    with pytest.raises(ShardError, match=rf"{shard.name}.*{key}.*sha256"):
        load_split(prepared, "val")


def test_missing_shard_file_is_named(prepared):
    shard = sorted((prepared / "train").glob("*.tar"))[-1]
    shard.unlink()
    with pytest.raises(ShardError, match=rf"{shard.name}.*manifest.parquet|manifest.parquet.*{shard.name}"):
        load_split(prepared, "train")


def test_extra_shard_not_in_the_manifest_is_named(prepared):
    extra = prepared / "val" / "shard-000099.tar"
    shutil.copyfile(sorted((prepared / "train").glob("*.tar"))[0], extra)
    with pytest.raises(ShardError, match=rf"{extra.name}.*not list"):
        load_split(prepared, "val")


def test_prepared_folder_without_its_manifest_is_an_error(prepared):
    (prepared / "manifest.parquet").unlink()
    with pytest.raises(ShardError, match="manifest.parquet"):
        load_split(prepared, "train")


def test_bare_shard_folder_without_manifest_still_loads_with_a_warning(tmp_path, caplog):
    """Shard folders written by write_split alone (no prepare stage: no stats.json, no manifest) stay readable;
    the reader says they cannot be verified."""
    write_split(({"key": f"k{i}", "png": _png(i), "label": i % 2, "class_name": "ab"[i % 2], "caption": None,
                  "source_id": str(i), "width": 16, "height": 16} for i in range(3)), tmp_path / "train", maxcount=10)
    (tmp_path / "classes.json").write_text(json.dumps(["a", "b"]))
    with caplog.at_level(logging.WARNING, logger="genvpt.datasets.shards"):
        assert len(load_split(tmp_path, "train")) == 3
    assert "manifest.parquet" in caplog.text and "not verified" in caplog.text


def test_garbled_header_mid_shard_is_caught_even_without_a_manifest(tmp_path):
    """tarfile (and so WebDataset) takes an unreadable header after the first for the end of the archive: the
    samples after it were dropped silently, even in a folder with no manifest to compare against."""
    write_split(({"key": f"k{i}", "png": _png(i), "label": 0, "class_name": "a", "caption": None, "source_id": str(i),
                  "width": 16, "height": 16} for i in range(5)), tmp_path / "train", maxcount=10)
    (tmp_path / "classes.json").write_text(json.dumps(["a"]))
    shard = tmp_path / "train" / "shard-000000.tar"
    third = next(m for m in _members(shard) if m.name.startswith("k2."))
    raw = bytearray(shard.read_bytes())
    raw[third.offset:third.offset + 100] = b"\x07" * 100
    shard.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match=rf"{shard.name}.*unreadable tar header at byte {third.offset}"):
        load_split(tmp_path, "train")


def test_intact_prepared_folder_still_loads(prepared):
    man = pq.read_table(prepared / "manifest.parquet").to_pandas()
    for split in ("train", "val", "test"):
        assert load_split(prepared, split).keys == list(man[man.split == split].key)


# ---- 2. unsafe tar members -----------------------------------------------------------------------------------
def _bad_member(kind: str, name: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Members to append to a shard: a whole sample under an unsafe name, or a link / device member."""
    if kind in ("absolute", "dotdot"):
        stem = ("/tmp/" if kind == "absolute" else "../") + name
        out = []
        for ext, data in (("cls", b"0"), ("json", b'{"class_name": "circle"}'), ("png", _png(5))):
            out.append((tarfile.TarInfo(f"{stem}.{ext}"), data))
        return out
    m = tarfile.TarInfo(f"{name}.png")
    if kind == "symlink":
        m.type, m.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        m.type, m.linkname = tarfile.LNKTYPE, "train_0000000.png"
    else:
        m.type, m.devmajor, m.devminor = tarfile.CHRTYPE, 1, 3
    return [(m, None)]


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_unsafe_tar_members_are_refused(prepared, kind):
    shard = sorted((prepared / "train").glob("*.tar"))[0]
    bad = _bad_member(kind, "train_9999999")
    _write_tar(shard, _read_tar(shard) + bad)
    with pytest.raises(ShardError, match=shard.name) as err:
        list(iter_split(prepared, "train", decode=False))
    assert bad[0][0].name in str(err.value)


def test_unsafe_member_in_a_user_webdataset_source_is_refused(prepared, tmp_path):
    shard = sorted((prepared / "train").glob("*.tar"))[0]
    _write_tar(shard, _read_tar(shard) + _bad_member("symlink", "train_9999999"))
    p = DatasetParams(name="webdataset", path=str(prepared / "train"), image_size=16)
    with pytest.raises(Exception, match=rf"{shard.name}.*train_9999999.png.*symlink"):
        prepare_dataset(p, PREP, tmp_path / "out")


# ---- 3. broken images among a user's images become recorded rejects ------------------------------------------
BAD_FILES = {
    "bomb.png": _forged_png(20_000, 20_000),  # 400 M pixels: PIL refuses to open it (DecompressionBombError)
    "big.png": _forged_png(10_000, 10_000),  # 100 M pixels: over PIL's limit (only a warning from PIL)
    "zero.png": b"",
    "notes.png": b"this is not an image",
    "truncated.png": _png(7, 32)[:300],
}
REASONS = {"bomb.png": r"decompression bomb.*400000000 pixels", "big.png": r"decompression bomb.*100000000 pixels",
           "zero.png": r"0 bytes|no image bytes", "notes.png": "not an image|cannot identify",
           "truncated.png": "truncated|unreadable"}


def _check_rejects(out: Path, stats: dict, names) -> None:
    rejects = {r["path"].split("/")[-1]: r["reason"] for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    assert set(rejects) == set(names), rejects
    for name in names:
        assert re.search(REASONS[name], rejects[name]), (name, rejects[name])
    assert stats["rejected"] == len(names)
    assert sum(stats["splits"][s]["images"] for s in ("train", "val", "test")) == 8  # the good ones all kept


def test_imagefolder_bad_images_are_recorded_rejects(tmp_path):
    root = tmp_path / "folder"
    for c, cls in enumerate(("cats", "dogs")):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            (root / cls / f"ok{i}.png").write_bytes(_png(10 * c + i))
    for name, data in BAD_FILES.items():
        (root / "cats" / name).write_bytes(data)
    p = DatasetParams(name="imagefolder", path=str(root), image_size=16, val_fraction=0.25, test_fraction=0.25)
    out = tmp_path / "prep"
    stats = prepare_dataset(p, PrepareParams(max_reject_fraction=0.9), out)
    _check_rejects(out, stats, BAD_FILES)


def test_parquet_bad_images_are_recorded_rejects(tmp_path):
    rows = [{"image": {"bytes": _png(i), "path": f"{i}.png"}, "label": i % 2} for i in range(8)]
    rows += [{"image": {"bytes": data, "path": name}, "label": 0} for name, data in BAD_FILES.items()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    p = DatasetParams(name="parquet", path=str(tmp_path / "data.parquet"), image_size=16, val_fraction=0.25,
                      test_fraction=0.25)
    out = tmp_path / "prep"
    stats = prepare_dataset(p, PrepareParams(max_reject_fraction=0.9), out)
    rejects = {r["path"]: r["reason"] for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    assert len(rejects) == len(BAD_FILES) == stats["rejected"]
    for i, name in enumerate(BAD_FILES, start=8):  # the bad rows are data.parquet/8 ... /12
        assert re.search(REASONS[name], rejects[f"data.parquet/{i}"]), (name, rejects)
    assert sum(stats["splits"][s]["images"] for s in ("train", "val", "test")) == 8


def test_extreme_aspect_ratio_is_fitted_without_a_huge_intermediate(tmp_path):
    """A 1 x 2,000,000 image (a few KB as a 1-bit PNG) once meant a 16 x 32,000,000 RGB resize (1.5 GB)."""
    from genvpt.datasets.base import fit_square

    img = Image.new("RGB", (1, 2_000_000), (200, 10, 10))
    out = fit_square(img, 16)
    assert out.size == (16, 16) and out.getpixel((8, 8)) == (200, 10, 10)
    small = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    ref = small.resize((24, 16), Image.BICUBIC, reducing_gap=None).crop((4, 0, 20, 16))
    assert np.array_equal(np.asarray(fit_square(small, 16)), np.asarray(ref))  # ordinary images: unchanged


# ---- 4. parquet schemas --------------------------------------------------------------------------------------
@pytest.mark.parametrize("column,values,expected", [
    ("image", [1, 2], "image.*int64.*expected.*binary"),
    ("image", ["a.png", "b.png"], "image.*string.*expected.*binary"),
    ("label", [0.5, 1.0], "label.*double.*expected.*integer or string"),
    ("label", [[0], [1]], "label.*list.*expected.*integer or string"),
    ("text", [1, 2], "text.*int64.*expected.*string"),
])
def test_parquet_wrong_column_types_name_file_and_column(tmp_path, column, values, expected):
    cols = {"image": [_png(0), _png(1)], "label": [0, 1], "text": ["a", "b"], column: values}
    pq.write_table(pa.table(cols), tmp_path / "bad.parquet")
    p = DatasetParams(name="parquet", path=str(tmp_path / "bad.parquet"), image_size=16, caption_column="text")
    with pytest.raises(TypeError, match=rf"bad.parquet.*{expected}"):
        prepare_dataset(p, PREP, tmp_path / "prep")
    assert not (tmp_path / "prep").exists()


def test_parquet_missing_column_names_file_and_column(tmp_path):
    pq.write_table(pa.table({"image": [_png(0)], "lbl": [0]}), tmp_path / "x.parquet")
    p = DatasetParams(name="parquet", path=str(tmp_path / "x.parquet"))
    with pytest.raises(KeyError, match=r"x.parquet.*missing column.*label"):
        prepare_dataset(p, PREP, tmp_path / "prep")


def test_parquet_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.parquet").write_bytes(b"not a parquet file at all")
    p = DatasetParams(name="parquet", path=str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"train.parquet.*not a readable parquet"):
        prepare_dataset(p, PREP, tmp_path / "prep")


def test_parquet_null_labels_are_rejects_not_a_crash(tmp_path):
    rows = [{"image": _png(i), "label": (None if i == 3 else i % 2)} for i in range(9)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    p = DatasetParams(name="parquet", path=str(tmp_path / "data.parquet"), image_size=16, class_names=["a", "b"],
                      val_fraction=0.25, test_fraction=0.25)
    stats = prepare_dataset(p, PrepareParams(max_reject_fraction=0.5), tmp_path / "prep")
    rejects = pq.read_table(tmp_path / "prep" / "rejects.parquet").to_pylist()
    assert stats["rejected"] == 1 and rejects[0]["path"].endswith("/3") and "no label" in rejects[0]["reason"]


# ---- 5. token shards ---------------------------------------------------------------------------------------------
def _token_dir(root: Path, n: int = 7, with_index: bool = True, labels=None) -> Path:
    """Token shards as the tokenize stage writes them: shards + meta.json with counts (and per-shard counts and
    sha256 from token_shard_index) + classes.json."""
    from genvpt.tokenizers.token_shards import token_shard_index

    labels = labels if labels is not None else [i % 2 for i in range(n)]
    samples = [{"key": f"val_{i:07d}", "label": labels[i], "class_name": "ab"[i % 2], "caption": None,
                "scales": [np.array([i % 4]), np.arange(4) % 4]} for i in range(n)]
    write_token_split(samples, root / "val", vocab_size=4, maxcount=3)
    meta = {"family": "msvq", "grid": [1, 2], "vocab_size": 4, "counts": {"val": n}, "class_names": ["a", "b"]}
    if with_index:
        meta["shards"] = {"val": token_shard_index(root / "val")}
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "classes.json").write_text(json.dumps(["a", "b"]))
    return root


def test_tokenize_stage_records_per_shard_counts_and_checks_the_prepared_manifest(prepared, tmp_path):
    from genvpt.tokenizers import save_tokenizer
    from stages import tokenize

    from _adapt_tiny import tiny_msvq

    save_tokenizer(tmp_path / "tok.pt", tiny_msvq())
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tokenizer": {"device": "cpu", "num_threads": 1,
                                                    "tokenize": {"batch_size": 8, "shard_maxcount": 2}}}))
    args = ["--family", "msvq", "--tokenizer", str(tmp_path / "tok.pt"), "--data", str(prepared), "--params",
            str(params), "--no-progress"]
    tokenize.main(args + ["--out", str(tmp_path / "tokens")])
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    for split, n in meta["counts"].items():
        index = meta["shards"][split]
        assert sum(v["count"] for v in index.values()) == n
        assert sorted(index) == sorted(p.name for p in (tmp_path / "tokens" / split).glob("*.tar"))
    assert len(load_tokens(tmp_path / "tokens", "train")) == meta["counts"]["train"]
    # a damaged prepared shard stops the tokenize stage with the shard's name, and leaves no token folder
    shard = sorted((prepared / "train").glob("*.tar"))[0]
    _truncate_before_last_sample(shard)
    with pytest.raises(ShardError, match=shard.name):
        tokenize.main(args + ["--out", str(tmp_path / "tokens2")])
    assert not (tmp_path / "tokens2").exists()


def test_token_shard_truncated_at_a_member_boundary_is_named(tmp_path):
    d = _token_dir(tmp_path / "tokens")
    shard = sorted((d / "val").glob("*.tar"))[0]
    _truncate_before_last_sample(shard)
    with pytest.raises(TokenShardError, match=shard.name):
        load_tokens(d, "val")
    with pytest.raises(TokenShardError, match=shard.name):
        list(iter_tokens(d, "val"))


def test_token_shard_with_changed_tokens_fails_its_sha256(tmp_path):
    """Tokens garbled inside the vocabulary range: a valid tar, valid npy arrays, the right count."""
    d = _token_dir(tmp_path / "tokens")
    shard = sorted((d / "val").glob("*.tar"))[1]
    items = _read_tar(shard)
    edited = []
    for m, data in items:
        if m.name.endswith(".tok1.npy"):
            arr = np.load(io.BytesIO(data))
            buf = io.BytesIO()
            np.save(buf, (arr + 1) % 4)
            data = buf.getvalue()
        edited.append((m, data))
    _write_tar(shard, edited)
    with pytest.raises(TokenShardError, match=rf"{shard.name}.*sha256"):
        load_tokens(d, "val")


def test_missing_token_shard_is_named(tmp_path):
    d = _token_dir(tmp_path / "tokens")
    shard = sorted((d / "val").glob("*.tar"))[-1]
    shard.unlink()
    with pytest.raises(TokenShardError, match=shard.name):
        load_tokens(d, "val")


def test_token_folder_without_shard_index_still_checks_the_count_when_streaming(tmp_path):
    d = _token_dir(tmp_path / "tokens", with_index=False)
    shard = sorted((d / "val").glob("*.tar"))[0]
    _truncate_before_last_sample(shard)
    with pytest.raises(TokenShardError, match=r"6 samples.*meta.json says 7"):
        list(iter_tokens(d, "val"))


def test_unsafe_member_in_a_token_shard_is_refused(tmp_path):
    d = _token_dir(tmp_path / "tokens", with_index=False)
    shard = sorted((d / "val").glob("*.tar"))[0]
    _write_tar(shard, _read_tar(shard) + _bad_member("symlink", "val_9999999"))
    with pytest.raises(TokenShardError, match=rf"{shard.name}.*val_9999999.png"):
        load_tokens(d, "val")


# ---- 6. the target's classes vs the backbone's class table ---------------------------------------------------
@pytest.mark.parametrize("label", [-1, 2])
def test_token_label_outside_the_class_list_is_named(tmp_path, label):
    from genvpt.adaptation.data import load_train_data

    d = _token_dir(tmp_path / "tokens", labels=[0, 1, 0, label, 0, 1, 0])
    with pytest.raises(TokenShardError, match=rf"shard-000001.tar.*val_0000003.*label {label}.*2 classes"):
        load_train_data(d, None, "a photo of {class_name}", split="val")


def _adapt(backbone_classes: int, method: str, tmp_path):
    from genvpt.adaptation.params import AdaptationParams
    from genvpt.adaptation.train import train_adaptation
    from genvpt.backbones import backbone_class

    from _adapt_tiny import tiny_data, tiny_generator, tiny_vqgan

    cfg = AdaptationParams(configs={"x": {"backbone": "ar", "tokenizer": "vqgan", "method": method, "train": {
        "steps": 1, "batch_size": 4, "checkpoint_every": 2, "warmup_steps": 0}}}).config("x")
    backbone = backbone_class("ar")(tiny_generator("ar", num_classes=backbone_classes), tiny_vqgan(),
                                    {"cfg": 1.0, "top_k": 0})
    return train_adaptation(cfg, backbone=backbone, data=tiny_data("ar", n=6), out_dir=tmp_path / method,
                            progress=False)


def test_more_target_classes_than_the_backbone_knows(tmp_path):
    """By design: a method that feeds the target's labels to the backbone's class table refuses, naming both
    counts; a method that replaces the class condition (vpt) handles any number of classes."""
    with pytest.raises(ValueError, match=r"target has 3 classes but the ar backbone knows 2.*vpt"):
        _adapt(2, "lora", tmp_path)
    assert _adapt(2, "vpt", tmp_path)["trainable_params"] > 0


def test_fewer_target_classes_than_the_backbone_knows(tmp_path):
    """By design: fewer target classes are fine: target class i conditions on the backbone's class row i."""
    assert _adapt(5, "lora", tmp_path)["trainable_params"] > 0


def test_negative_label_in_train_data_is_refused():
    """A label of -1 would index the backbone's class table from its end (AR: an image-token row) or fail deep
    inside an embedding; TrainData refuses it."""
    from genvpt.adaptation.data import TrainData

    with pytest.raises(ValueError, match="negative label -1"):
        TrainData([torch.zeros(2, 4, dtype=torch.long)], torch.tensor([0, -1]), ["a", "b"])
