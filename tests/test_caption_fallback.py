"""Issue #18 section 7: a user's dataset runs through the caption stage by default. An image folder of real images
(no captions) and ``digits`` go through ``prepare`` and ``caption`` with the default params (backend ``dataset``,
offline, no BLIP-2): the caption level falls back to the sentence level, captions.parquet records it and the
report's note says so. A model backend whose weights are missing falls back the same way; ``caption.fallback:
error`` keeps the old failure."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from genvpt.captions.params import CaptionParams
from genvpt.captions.run import FALLBACK_CAPTIONER, caption_dataset, caption_note, caption_record, read_captions
from genvpt.texts import load_text_bank

from _shapes_prepared import make_prepared


def _letters(root: Path, letters=("a", "b"), per_class: int = 5) -> Path:
    """A class-per-folder tree of letter images (drawn, not generated data with captions)."""
    from PIL import Image, ImageDraw

    for c in letters:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            img = Image.new("RGB", (24, 24), (255, 255, 255))
            ImageDraw.Draw(img).text((6 + i % 3, 4 + i % 4), c.upper(), fill=(i * 40, 0, 0))
            img.save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("dataset", ["imagefolder", "digits"])
def test_a_dataset_without_captions_passes_the_caption_stage_by_default(tmp_path, dataset):
    from stages import caption, prepare

    block = {"name": dataset, "image_size": 16}
    if dataset == "imagefolder":
        block["path"] = str(_letters(tmp_path / "letters"))
    else:
        block["few_shot"] = {"images_per_class": 2}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"dataset": block}))  # everything else: the defaults (caption.backend: dataset)
    prepared, out = tmp_path / "prepared", tmp_path / "captions.parquet"
    prepare.main(["--block", "dataset", "--out", str(prepared), "--params", str(params)])
    stats = caption.main(["--prepared", str(prepared), "--out", str(out), "--params", str(params)])

    manifest = pq.read_table(prepared / "manifest.parquet").to_pydict()
    n = len(manifest["key"])
    assert stats["fallback"] == n and stats["captions"] == n
    t = pq.read_table(out).to_pydict()
    assert set(t["captioner"]) == {FALLBACK_CAPTIONER} and set(t["caption"]) == {""}
    rec = caption_record(out)
    assert rec["fallback"]["samples"] == n and rec["fallback"]["of"] == n
    assert rec["fallback"]["reason"] == f"the dataset has no caption for {n} samples and caption.backend is dataset"
    assert "the sentence level" in caption_note(out)

    # the caption level the adapt stage reads is the sentence level of each sample's class
    classes = json.loads((prepared / "classes.json").read_text())
    bank = load_text_bank(classes, out, "a photo of {class_name}")
    texts = bank.texts(manifest["key"], manifest["label"])
    assert texts.caption == texts.sentence
    assert texts.caption[0] == f"a photo of {classes[manifest['label'][0]].replace('_', ' ')}"


def test_only_the_samples_without_a_caption_fall_back(tmp_path):
    prepared = make_prepared(tmp_path / "target")
    t = pq.read_table(prepared / "manifest.parquet")
    caps = t.column("caption").to_pylist()
    caps[:3] = [None, "", "  "]
    t = t.set_column(t.schema.get_field_index("caption"), "caption", pa.array(caps, pa.string()))
    pq.write_table(t, prepared / "manifest.parquet")
    out = tmp_path / "c.parquet"
    stats = caption_dataset(prepared, out, CaptionParams())
    assert stats["fallback"] == 3
    got = pq.read_table(out).to_pydict()
    assert got["captioner"][:4] == [FALLBACK_CAPTIONER] * 3 + ["dataset"]
    assert read_captions(out)[got["key"][3]] == caps[3]
    note = caption_note(out)
    assert note.startswith("Captions (the caption level of MVP's texts): the dataset's own; 3 of ") and "sentence level" in note


def test_a_captioner_that_cannot_run_falls_back_and_says_why(tmp_path):
    prepared = make_prepared(tmp_path / "target")
    missing = tmp_path / "models" / "blip2-opt-2.7b"
    out = tmp_path / "c.parquet"
    stats = caption_dataset(prepared, out, CaptionParams(backend="transformers", model=str(missing), device="cpu"))
    assert stats["fallback"] == stats["captions"] == 12
    assert str(missing) in stats["fallback_reason"] and "transformers:" in stats["fallback_reason"]
    assert caption_note(out).startswith("Captions: none (transformers:") and "sentence level" in caption_note(out)


def test_a_dataset_with_captions_records_no_fallback(tmp_path):
    prepared = make_prepared(tmp_path / "target")
    out = tmp_path / "c.parquet"
    assert caption_dataset(prepared, out, CaptionParams())["fallback"] == 0
    assert caption_record(out)["fallback"] is None
    assert b"genvpt.fallback" not in pq.read_schema(out).metadata  # same bytes as before fallbacks existed
    assert caption_note(out) == "Captions (the caption level of MVP's texts): the dataset's own, all 12 samples."


def test_fallback_is_validated():
    from genvpt.config import ConfigError, validate_params

    with pytest.raises(ConfigError, match=r"caption\.fallback: Input should be 'sentence' or 'error'"):
        validate_params({"caption": {"fallback": "blip"}})
