"""The pretrain_tokenizer and tokenize stages end to end on a tiny prepared dataset; token shards and their errors."""
from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from genvpt.datasets.shards import write_split
from genvpt.tokenizers import MSVQConfig, MultiScaleVQVAE, decode_tokens, encode_tokens, load_tokenizer
from genvpt.tokenizers.token_shards import TokenShardError, load_tokens, write_token_split
from genvpt.tokenizers.train import to_float

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the stage entry points (stages/*.py) live at the repository root
    sys.path.insert(0, str(ROOT))

SIZE = 16
TINY = {
    "num_threads": None,
    "data": {},  # the source alone (test_pretrain_on_broad_data adds some)
    "eval_batch_size": 8,
    "vqgan": {"ch": 8, "ch_mult": [1, 2], "attn_resolutions": [8], "z_channels": 8, "n_embed": 16, "embed_dim": 4,
              "train": {"steps": 3, "batch_size": 8, "ae_warmup_steps": 1, "restart_every": 2}},
    "msvq": {"ch": 8, "ch_mult": [1, 2], "z_channels": 4, "vocab_size": 16, "patch_nums": [1, 2, 4, 8],
             "train": {"steps": 3, "batch_size": 8, "ae_warmup_steps": 1, "restart_every": 2}},
    "tokenize": {"batch_size": 5, "shard_maxcount": 7},
}


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.full((SIZE, SIZE, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    arr[4:12, 4:12] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    classes = ["a", "b"]
    for split, n in (("train", 16), ("val", 11), ("test", 6)):
        write_split(
            ({"key": f"{split}{i:03d}", "png": _png(i + {"train": 0, "val": 100, "test": 200}[split]), "label": i % 2,
              "class_name": classes[i % 2], "caption": f"caption {i}" if i % 3 else None, "source_id": str(i),
              "width": SIZE, "height": SIZE} for i in range(n)),
            root / split, maxcount=100,
        )
    (root / "classes.json").write_text(json.dumps(classes))
    return root


def _params(tmp_path, **tokenizer):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tokenizer": {**TINY, **tokenizer}}))
    return str(path)


@pytest.mark.parametrize("family", ["vqgan", "msvq"])
def test_pretrain_and_tokenize_round_trip(tmp_path, prepared, family):
    from stages import pretrain_tokenizer, tokenize

    params = _params(tmp_path)
    out = tmp_path / "tok"
    pretrain_tokenizer.main(["--family", family, "--source", str(prepared), "--out", str(out), "--params", params,
                             "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"psnr", "codebook_usage", "perplexity", "train_seconds"} <= set(metrics)
    assert (metrics.get("scales") is not None) == (family == "msvq")
    assert (out / "recon.png").stat().st_size > 0 and (out / "curve.csv").read_text().startswith("step,")
    assert not (out / "train_state.pt").exists()  # removed once training is complete

    tokens = tmp_path / "tokens"
    tokenize.main(["--family", family, "--tokenizer", str(out / "model.pt"), "--data", str(prepared), "--out",
                   str(tokens), "--params", params, "--no-progress"])
    model = load_tokenizer(out / "model.pt")
    from genvpt.datasets.shards import load_split

    val = load_split(prepared, "val")
    data = load_tokens(tokens, "val")
    assert data.keys == val.keys and torch.equal(data.labels, val.labels) and data.captions == val.captions
    assert data.class_names == ["a", "b"]
    assert len(sorted((tokens / "train").glob("*.tar"))) == 3  # 16 samples, 7 per shard
    with torch.inference_mode():
        fresh = encode_tokens(model, to_float(val.images))
        assert all(torch.equal(a, b) for a, b in zip(data.scales, fresh))
        # decoding the stored tokens reproduces the tokenizer's reconstruction exactly
        assert torch.equal(decode_tokens(model, data.scales), decode_tokens(model, fresh))
    assert data.grid == ([1, 2, 4, 8] if family == "msvq" else [8])
    m = json.loads((tmp_path / "tokens-metrics.json").read_text())
    assert m["val"]["images"] == 11 and m["train"]["encode_images_per_s"] > 0 and "psnr" in m["val"]
    # every prepared split is tokenized: test too, with the prepared keys and labels
    meta = json.loads((tokens / "meta.json").read_text())
    assert meta["counts"] == {"train": 16, "val": 11, "test": 6} and m["test"]["images"] == 6
    test = load_tokens(tokens, "test")
    assert test.keys == load_split(prepared, "test").keys and test.labels.tolist() == [i % 2 for i in range(6)]

    # a prepared folder without a test split (the source block) gives token shards without one
    no_test = tmp_path / "no_test"
    shutil.copytree(prepared, no_test, ignore=shutil.ignore_patterns("test"))
    tokenize.main(["--family", family, "--tokenizer", str(out / "model.pt"), "--data", str(no_test), "--out",
                   str(tmp_path / "tokens2"), "--params", params, "--no-progress"])
    assert json.loads((tmp_path / "tokens2" / "meta.json").read_text())["counts"] == {"train": 16, "val": 11}
    assert not (tmp_path / "tokens2" / "test").exists()


def test_pretrain_on_broad_data(tmp_path, prepared):
    """tokenizer.data: the tokenizer trains on the source and every named dataset's train split, reports the PSNR on
    each one's val split, and refuses a data folder that lacks a named entry."""
    from stages import pretrain_tokenizer

    params = _params(tmp_path, data={"extra": {"seed": 5}})
    broad = tmp_path / "broad"
    args = ["--family", "vqgan", "--source", str(prepared), "--data", str(broad), "--out", str(tmp_path / "tok"),
            "--params", params, "--no-progress"]
    with pytest.raises(FileNotFoundError, match="prepare_tokenizer"):
        pretrain_tokenizer.main(args)
    shutil.copytree(prepared, broad / "extra")
    (broad / "datasets.json").write_text(json.dumps({"datasets": ["other"]}))
    with pytest.raises(FileNotFoundError, match=r"lacks tokenizer.data entries \['extra'\]"):
        pretrain_tokenizer.main(args)
    (broad / "datasets.json").write_text(json.dumps({"datasets": ["extra"]}))
    pretrain_tokenizer.main(args)
    metrics = json.loads((tmp_path / "tok" / "metrics.json").read_text())
    assert metrics["train_images"] == {"source": 16, "extra": 16}
    assert set(metrics["psnr_by_data"]) == {"extra"} and metrics["psnr_by_data"]["extra"] > 0


def test_pretrain_imports_named_checkpoint(tmp_path, prepared):
    from stages import pretrain_tokenizer

    torch.manual_seed(0)
    official = MultiScaleVQVAE(MSVQConfig(vocab_size=16, z_channels=4, ch=8, ch_mult=(1, 2), patch_nums=(1, 2, 4, 8),
                                     norm_groups=32))
    torch.save(official.state_dict(), tmp_path / "vae.pth")  # VAR's released format: a plain state dict
    params = _params(tmp_path, msvq={"checkpoint": str(tmp_path / "vae.pth"), "patch_nums": [1, 2, 4, 8]})
    out = tmp_path / "tok"
    pretrain_tokenizer.main(["--family", "msvq", "--source", str(prepared), "--out", str(out), "--params", params,
                             "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["imported"] is True and "train_seconds" not in metrics
    model = load_tokenizer(out / "model.pt", family="msvq")
    for k, v in official.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def _token_dir(tmp_path, n=6):
    d = tmp_path / "tokens"
    samples = [{"key": f"k{i}", "label": i % 2, "class_name": "ab"[i % 2], "caption": None,
                "scales": [np.array([i % 4]), np.arange(4) % 4]} for i in range(n)]
    write_token_split(samples, d / "val", vocab_size=4, maxcount=3)
    (d / "meta.json").write_text(json.dumps({"family": "msvq", "grid": [1, 2], "vocab_size": 4,
                                             "counts": {"val": n}, "class_names": ["a", "b"]}))
    return d


def test_token_shards_load(tmp_path):
    data = load_tokens(_token_dir(tmp_path), "val")
    assert [s.shape for s in data.scales] == [(6, 1), (6, 4)] and data.scales[0].dtype == torch.long
    assert data.labels.tolist() == [0, 1, 0, 1, 0, 1] and data.grid == [1, 2]


def test_corrupt_token_shard_names_the_shard(tmp_path):
    d = _token_dir(tmp_path)
    shard = sorted((d / "val").glob("*.tar"))[1]
    raw = bytearray(shard.read_bytes())
    raw[600:1400] = b"\x07" * 800  # garble the middle of the tar
    shard.write_bytes(bytes(raw))
    with pytest.raises(TokenShardError, match=str(shard.name)):
        load_tokens(d, "val")


def test_truncated_token_shard_is_an_error(tmp_path):
    d = _token_dir(tmp_path)
    shard = sorted((d / "val").glob("*.tar"))[1]
    shard.write_bytes(shard.read_bytes()[:1024])
    with pytest.raises(TokenShardError, match="shard-000001|meta.json says 6"):
        load_tokens(d, "val")


def test_tokens_outside_vocabulary_are_an_error(tmp_path):
    d = _token_dir(tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "vocab_size": 3}))
    with pytest.raises(TokenShardError, match=r"shard-000000.*outside \[0, 3\)"):
        load_tokens(d, "val")
    with pytest.raises(TokenShardError, match="meta.json not found"):
        load_tokens(tmp_path, "val")
