"""The ADM-evaluator export (genvpt.metrics.adm_export) and the VAR ImageNet protocol overlay
(genvpt.metrics.protocols)."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from genvpt.metrics import protocols
from genvpt.metrics.adm_export import export_adm_npz, main


def _sample_set(root, n=5, size=(12, 10), labels=True, mode="RGB"):
    """A sample set made by hand: images/000000.png ... + record.json; returns the HWC arrays."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    arrs = []
    for i in range(n):
        a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(a).convert(mode).save(root / "images" / f"{i:06d}.png")
        arrs.append(np.asarray(Image.fromarray(a).convert(mode).convert("RGB")))
    rec = {"n": n, "name": "var"}
    if labels:
        rec["labels"] = [i % 3 for i in range(n)]
    (root / "record.json").write_text(json.dumps(rec))
    return np.stack(arrs)


def _evaluator_read(path):
    """What guided-diffusion's evaluator does (open_npz_array): stream arr_0.npy from the zip after its header."""
    with zipfile.ZipFile(path) as zf:
        assert "arr_0.npy" in zf.namelist()
        with zf.open("arr_0.npy") as fh:
            version = np.lib.format.read_magic(fh)
            assert version in ((1, 0), (2, 0))
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(fh))
            assert not fortran and not dtype.hasobject  # the streaming reader, not the in-memory fallback
            data = fh.read()
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def test_export_roundtrip_shape_dtype_key_values(tmp_path):
    want = _sample_set(tmp_path / "set", n=5, size=(12, 10))
    info = export_adm_npz(tmp_path / "set", tmp_path / "out.npz")
    assert info["shape"] == [5, 10, 12, 3] and info["labels"]
    with np.load(tmp_path / "out.npz") as z:
        assert list(z.keys())[0] == "arr_0"
        arr = z["arr_0"]
        assert arr.dtype == np.uint8 and arr.shape == (5, 10, 12, 3) and arr.flags.c_contiguous
        assert np.array_equal(arr, want)  # bytes unchanged, file-name order
        assert np.array_equal(z["arr_1"], [0, 1, 2, 0, 1]) and z["arr_1"].dtype == np.int64
    assert np.array_equal(_evaluator_read(tmp_path / "out.npz"), want)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.npz")]  # no temporary file left


def test_export_resizes_bicubic_and_converts_to_rgb(tmp_path):
    _sample_set(tmp_path / "set", n=3, size=(8, 8), labels=False, mode="L")  # greyscale files
    export_adm_npz(tmp_path / "set", tmp_path / "r.npz", size=16)
    with np.load(tmp_path / "r.npz") as z:
        arr = z["arr_0"]
        assert "arr_1" not in z.files  # no labels in the record: only the images
    assert arr.shape == (3, 16, 16, 3) and arr.dtype == np.uint8
    with Image.open(tmp_path / "set" / "images" / "000001.png") as im:
        ref = np.asarray(im.convert("RGB").resize((16, 16), resample=Image.BICUBIC))
    assert np.array_equal(arr[1], ref)


def test_plain_image_folder_and_cli(tmp_path, capsys):
    want = _sample_set(tmp_path / "set", n=2, size=(4, 4))
    assert main([str(tmp_path / "set" / "images"), str(tmp_path / "cli.npz")]) == 0
    assert "arr_0 uint8 (2, 4, 4, 3)" in capsys.readouterr().out
    assert np.array_equal(np.load(tmp_path / "cli.npz")["arr_0"], want)


def test_export_reads_the_sample_stage_shard(tmp_path):
    import torch

    from genvpt.sampling import write_sample_images

    want = np.random.default_rng(1).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    d = tmp_path / "set"
    d.mkdir()
    write_sample_images(d, torch.from_numpy(want).permute(0, 3, 1, 2))
    (d / "record.json").write_text(json.dumps({"n": 4, "name": "var", "labels": [0, 0, 1, 1]}))
    info = export_adm_npz(d, tmp_path / "out.npz")
    assert info["from"].endswith("images.tar") and info["shape"] == [4, 6, 5, 3]
    with np.load(tmp_path / "out.npz") as z:
        assert np.array_equal(z["arr_0"], want) and z["arr_1"].tolist() == [0, 0, 1, 1]
    (d / "record.json").write_text(json.dumps({"n": 5, "name": "var"}))  # a shard short of the record's count
    with pytest.raises(ValueError, match=r"images\.tar: 4 members .*n=5"):
        export_adm_npz(d, tmp_path / "bad.npz")


def test_errors_name_the_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        export_adm_npz(tmp_path / "empty", tmp_path / "x.npz")
    _sample_set(tmp_path / "mixed", n=2, size=(6, 6), labels=False)
    Image.fromarray(np.zeros((7, 6, 3), np.uint8)).save(tmp_path / "mixed" / "images" / "000009.png")
    (tmp_path / "mixed" / "record.json").unlink()
    with pytest.raises(ValueError, match=r"different sizes in .*mixed.*6x6.*6x7"):
        export_adm_npz(tmp_path / "mixed", tmp_path / "x.npz")
    with pytest.raises(ValueError, match="different sizes"):  # resizing does not hide a mixed set
        export_adm_npz(tmp_path / "mixed", tmp_path / "x.npz", size=8)
    assert not (tmp_path / "x.npz").exists()
    assert main([str(tmp_path / "empty"), str(tmp_path / "x.npz")]) == 2
    assert "empty" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ VAR ImageNet protocol


def test_var_imagenet_overlay_file_holds_the_protocol():
    assert protocols.load_overlay(protocols.VAR_IMAGENET_OVERLAY) == protocols.VAR_IMAGENET_PROTOCOL
    assert protocols.flatten(protocols.VAR_IMAGENET_PROTOCOL) == {
        "sample.images_per_class": 50, "generator.var.sample.cfg": 1.5, "generator.var.sample.top_k": 900,
        "generator.var.sample.top_p": 0.96, "generator.var.sample.temperature": 1.0}


def test_var_imagenet_overlay_merges_into_the_project_params():
    from genvpt.config import load_params

    repo = load_params(protocols.ROOT / "params.yaml")
    merged = protocols.apply_overlay(protocols.VAR_IMAGENET_OVERLAY, protocols.ROOT / "params.yaml")
    assert protocols.overlay_mismatches(merged, protocols.VAR_IMAGENET_PROTOCOL) == {}
    vs = merged.generator.var.sample
    assert (merged.sample.images_per_class, vs.cfg, vs.top_k, vs.top_p, vs.temperature) == (50, 1.5, 900, 0.96, 1.0)
    # nothing else changes
    assert merged.model_dump(exclude={"sample": {"images_per_class"}, "generator": {"var": {"sample"}}}) == \
        repo.model_dump(exclude={"sample": {"images_per_class"}, "generator": {"var": {"sample"}}})
    # the same overlay over the built-in defaults (an empty params file)
    assert protocols.overlay_mismatches(protocols.apply_overlay(protocols.VAR_IMAGENET_PROTOCOL, {}),
                                        protocols.VAR_IMAGENET_PROTOCOL) == {}


def test_overlay_errors_and_dvc_flags(capsys):
    from genvpt.config import ConfigError

    with pytest.raises(ConfigError, match="generator.var.sample.top_kk"):
        protocols.apply_overlay({"generator": {"var": {"sample": {"top_kk": 900}}}}, {})
    flags = protocols.dvc_set_flags(protocols.VAR_IMAGENET_PROTOCOL)
    assert flags == ["-S", "sample.images_per_class=50", "-S", "generator.var.sample.cfg=1.5",
                     "-S", "generator.var.sample.top_k=900", "-S", "generator.var.sample.top_p=0.96",
                     "-S", "generator.var.sample.temperature=1.0"]
    assert protocols.main([str(protocols.VAR_IMAGENET_OVERLAY), "--params", str(protocols.ROOT / "params.yaml")]) == 0
    assert "dvc exp run -S sample.images_per_class=50" in capsys.readouterr().out
