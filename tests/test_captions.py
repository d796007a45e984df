"""Caption stage: the transformers BLIP-2 backend on a tiny random BLIP-2 built here, resumption after a crash,
the dataset backend, the LAVIS subprocess protocol, and the missing-weights messages."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from genvpt.captions.params import CaptionParams, LavisParams
from genvpt.captions.run import CaptionError, MissingWeightsError, caption_dataset, list_samples, partial_dir_for, read_captions

from _shapes_prepared import make_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A real prepared shapes dataset: 3 classes x 4 images (9 train / 3 val)."""
    return make_prepared(tmp_path_factory.mktemp("prep") / "target")


@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory) -> Path:
    """A 45k-parameter random BLIP-2 (config from ../shared/reference/ecosystem.md section 6) and a word-level
    tokenizer, saved with save_pretrained like a real checkpoint directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, OPTConfig, PreTrainedTokenizerFast)

    words = ["<unk>", "<pad>", "</s>"] + [f"w{i}" for i in range(3, 99)] + ["<image>"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    proc = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tok, num_query_tokens=4)
    cfg = Blip2Config(
        vision_config=Blip2VisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4).to_dict(),
        qformer_config=Blip2QFormerConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=37).to_dict(),
        text_config=OPTConfig(vocab_size=100, hidden_size=16, word_embed_proj_dim=16, ffn_dim=16, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=64, bos_token_id=2, eos_token_id=2,
                              pad_token_id=1).to_dict(),
        num_query_tokens=4,
        image_token_index=99,
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(cfg).eval()
    d = tmp_path_factory.mktemp("blip2") / "tiny-blip2"
    proc.save_pretrained(d)
    model.save_pretrained(d)
    return d


def _hf(model_dir: Path, **kw) -> CaptionParams:
    base = dict(backend="transformers", model=str(model_dir), num_beams=2, max_new_tokens=4, batch_size=4, device="cpu", flush_every=4)
    base.update(kw)
    return CaptionParams(**base)


def _table(path: Path) -> dict:
    return pq.read_table(path).to_pydict()


# ---- transformers backend -----------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", ["w5 w6", ""])
def test_transformers_backend_captions_every_key_with_prompt_stripped(prepared, tiny_blip2, tmp_path, prompt):
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from genvpt.datasets.shards import iter_split

    out = tmp_path / "captions.parquet"
    stats = caption_dataset(prepared, out, _hf(tiny_blip2, prompt=prompt))
    t = _table(out)
    samples = list_samples(prepared, ["train", "val", "test"])  # caption.splits: every split by default
    assert t["key"] == [s.key for s in samples] and stats["captions"] == 12
    assert set(t["captioner"]) == {f"transformers:{tiny_blip2}"}
    settings = json.loads(t["settings"][0])
    assert settings["num_beams"] == 2 and settings["max_new_tokens"] == 4 and settings["prompt"] == prompt
    assert not partial_dir_for(out).exists()

    # independent reference: generate on the first val image, strip the whole input prefix by hand
    proc = Blip2Processor.from_pretrained(tiny_blip2)
    model = Blip2ForConditionalGeneration.from_pretrained(tiny_blip2).eval()
    rec = next(iter_split(prepared, "val"))
    enc = proc(images=[rec["image"]], text=[prompt], return_tensors="pt") if prompt else proc(images=[rec["image"]], return_tensors="pt")
    with torch.inference_mode():
        full = model.generate(**enc, num_beams=2, max_new_tokens=4, min_new_tokens=1, do_sample=False)
    n_in = enc["input_ids"].shape[1] if prompt else 4 + 1  # <image> x 4 + BOS
    assert full[0, :4].tolist() == [99] * 4  # the output really starts with the image tokens
    expected = proc.decode(full[0, n_in:], skip_special_tokens=True).strip()
    assert dict(zip(t["key"], t["caption"]))[rec["key"]] == expected
    if prompt:
        assert proc.decode(full[0], skip_special_tokens=True).startswith(prompt)
        assert not any(c.startswith(prompt) for c in t["caption"])


def test_interrupted_run_resumes_from_captioned_keys(prepared, tiny_blip2, tmp_path, monkeypatch):
    from genvpt.captions import hf_blip2

    reference = tmp_path / "ref.parquet"
    caption_dataset(prepared, reference, _hf(tiny_blip2))

    out = tmp_path / "captions.parquet"
    real_generate = hf_blip2.TransformersBlip2.generate
    calls: list[int] = []

    def crashing(self, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_generate(self, images)

    monkeypatch.setattr(hf_blip2.TransformersBlip2, "generate", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        caption_dataset(prepared, out, _hf(tiny_blip2))
    assert not out.exists()  # nothing half-done under the final name
    partial = partial_dir_for(out)
    assert sum(pq.read_table(p).num_rows for p in partial.glob("part-*.parquet")) == 4

    calls.clear()
    monkeypatch.setattr(hf_blip2.TransformersBlip2, "generate", lambda self, images: (calls.append(len(images)), real_generate(self, images))[1])
    stats = caption_dataset(prepared, out, _hf(tiny_blip2))
    assert stats["resumed"] == 4 and stats["captioned_now"] == 8 and sum(calls) == 8
    assert _table(out)["caption"] == _table(reference)["caption"]
    assert not partial.exists()


def test_partial_progress_with_other_settings_is_discarded(prepared, tiny_blip2, tmp_path, monkeypatch):
    from genvpt.captions import hf_blip2

    out = tmp_path / "captions.parquet"
    real_generate = hf_blip2.TransformersBlip2.generate
    state = {"n": 0}

    def crash_second(self, images):
        state["n"] += 1
        if state["n"] == 2:
            raise RuntimeError("crash")
        return real_generate(self, images)

    monkeypatch.setattr(hf_blip2.TransformersBlip2, "generate", crash_second)
    with pytest.raises(RuntimeError):
        caption_dataset(prepared, out, _hf(tiny_blip2))
    monkeypatch.setattr(hf_blip2.TransformersBlip2, "generate", real_generate)
    stats = caption_dataset(prepared, out, _hf(tiny_blip2, num_beams=1))
    assert stats["resumed"] == 0 and stats["captioned_now"] == 12
    assert json.loads(_table(out)["settings"][0])["num_beams"] == 1


def test_missing_local_weights_name_the_path_and_the_fix(prepared, tmp_path):
    missing = tmp_path / "models" / "blip2-opt-2.7b"
    with pytest.raises(MissingWeightsError) as err:
        caption_dataset(prepared, tmp_path / "c.parquet", _hf(missing, fallback="error"))
    msg = str(err.value)
    assert str(missing) in msg and "huggingface-cli download" in msg and "caption.model" in msg


def test_uncached_hub_id_offline_fails_fast_and_names_the_id(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError) as err:
        caption_dataset(prepared, tmp_path / "c.parquet", _hf("Salesforce/blip2-opt-2.7b", local_files_only=True,
                                                              fallback="error"))
    msg = str(err.value)
    assert "'Salesforce/blip2-opt-2.7b'" in msg and "local_files_only=True" in msg and "huggingface-cli download" in msg


# ---- dataset backend ----------------------------------------------------------------------------------------
def test_dataset_backend_copies_the_prepared_captions(prepared, tmp_path):
    out = tmp_path / "captions.parquet"
    caption_dataset(prepared, out, CaptionParams())
    manifest = pq.read_table(prepared / "manifest.parquet").to_pydict()
    assert read_captions(out) == dict(zip(manifest["key"], manifest["caption"]))
    assert set(_table(out)["captioner"]) == {"dataset"}


def test_dataset_backend_without_captions_says_which_backend_to_use(prepared, tmp_path):
    import pyarrow as pa

    bare = tmp_path / "bare"
    bare.mkdir()
    t = pq.read_table(prepared / "manifest.parquet")
    t = t.set_column(t.schema.get_field_index("caption"), "caption", pa.array([None] * t.num_rows, pa.string()))
    pq.write_table(t, bare / "manifest.parquet")
    with pytest.raises(CaptionError, match="backend: transformers"):
        caption_dataset(bare, tmp_path / "c.parquet", CaptionParams(fallback="error"))


# ---- lavis backend (subprocess protocol) ---------------------------------------------------------------------
FAKE_WORKER = textwrap.dedent(
    """
    # stands in for lavis_worker.py: same command line, same JSONL output; captions = reversed keys
    import argparse, json, os, sys
    sys.path.insert(0, os.environ["REAL_WORKER_DIR"])
    from lavis_worker import iter_shard_images
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", nargs="*"); ap.add_argument("--keys"); ap.add_argument("--out")
    args, _ = ap.parse_known_args()
    keys = set(open(args.keys).read().split())
    crash_after = int(os.environ.get("CRASH_AFTER", "-1"))
    with open(args.out, "a") as out:
        for n, (key, img) in enumerate(iter_shard_images(args.shards, keys)):
            if n == crash_after:
                print("boom", file=sys.stderr); sys.exit(1)
            out.write(json.dumps({"key": key, "caption": key[::-1] + f" {img.size[0]}px"}) + "\\n"); out.flush()
    """
)


def test_lavis_backend_streams_worker_output_and_resumes(prepared, tmp_path, monkeypatch):
    from genvpt.captions import lavis_backend

    fake = tmp_path / "fake_worker.py"
    fake.write_text(FAKE_WORKER)
    monkeypatch.setattr(lavis_backend, "WORKER", fake)
    monkeypatch.setenv("REAL_WORKER_DIR", str(Path(lavis_backend.__file__).parent))
    params = CaptionParams(backend="lavis", flush_every=1, lavis=LavisParams(python=sys.executable))
    out = tmp_path / "captions.parquet"

    monkeypatch.setenv("CRASH_AFTER", "5")
    with pytest.raises(CaptionError, match="exit 1"):
        caption_dataset(prepared, out, params)
    assert not out.exists() and sum(pq.read_table(p).num_rows for p in partial_dir_for(out).glob("part-*.parquet")) == 5

    monkeypatch.delenv("CRASH_AFTER")
    stats = caption_dataset(prepared, out, params)
    assert stats["resumed"] == 5 and stats["captioned_now"] == 7
    t = _table(out)
    assert t["caption"] == [k[::-1] + " 32px" for k in t["key"]]
    assert set(t["captioner"]) == {"lavis:blip2_opt/caption_coco_opt2.7b"}


def test_lavis_worker_without_lavis_reports_it(prepared, tmp_path):
    # the real worker under an interpreter without LAVIS (this venv): a clear error, not a traceback
    params = CaptionParams(backend="lavis", fallback="error", lavis=LavisParams(python=sys.executable))
    with pytest.raises(CaptionError, match="LAVIS does not import"):
        caption_dataset(prepared, tmp_path / "c.parquet", params)


def test_lavis_backend_without_its_environment_says_make_lavis_env(prepared, tmp_path):
    params = CaptionParams(backend="lavis", fallback="error", lavis=LavisParams(python=str(tmp_path / "nope" / "python")))
    with pytest.raises(CaptionError, match="make lavis-env"):
        caption_dataset(prepared, tmp_path / "c.parquet", params)


def test_caption_params_validation():
    from genvpt.config import ConfigError, validate_params

    with pytest.raises(ConfigError, match="caption.backend"):
        validate_params({"caption": {"backend": "blip3"}})
    with pytest.raises(ConfigError, match="class_name"):
        validate_params({"caption": {"sentence_template": "a photo"}})
