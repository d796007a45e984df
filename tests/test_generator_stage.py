"""The classifier and the pretrain_generator / train_classifier stages end to end on tiny synthetic data."""
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from genvpt.classifier import class_accuracy, load_classifier, save_classifier, train_classifier
from genvpt.config import ConfigError, validate_params
from genvpt.generators import load_backbone, load_generator
from genvpt.tokenizers import encode_tokens, save_tokenizer
from genvpt.tokenizers.token_shards import write_token_split
from test_generator_training import tiny_msvq, tiny_vqgan  # sibling test module (pytest puts tests/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the stage entry points (stages/*.py) live at the repository root
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.usefixtures("one_thread")



COLOURS = torch.tensor([[230, 30, 30], [30, 200, 40], [40, 60, 230]], dtype=torch.uint8)


def colour_images(n, seed):
    """Class c = a square of colour c at a random place on a grey background (uint8 [n, 3, 32, 32])."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    img = torch.full((n, 3, 32, 32), 128, dtype=torch.uint8)
    for i in range(n):
        x, y = torch.randint(0, 20, (2,), generator=g).tolist()
        img[i, :, y:y + 12, x:x + 12] = COLOURS[labels[i]][:, None, None]
    return img, labels


def test_classifier_learns_and_roundtrips(tmp_path):
    x, y = colour_images(120, 0)
    vx, vy = colour_images(30, 1)
    model, report = train_classifier(x, y, vx, vy, num_classes=3, width=8, epochs=6, batch_size=16, lr=1e-2, seed=0)
    assert report["val_accuracy"] >= 0.9 and len(report["history"]) == 6
    save_classifier(tmp_path / "model.pt", model, ["r", "g", "b"], val_accuracy=report["val_accuracy"])
    back = load_classifier(tmp_path)
    assert back.class_names == ["r", "g", "b"] and back.meta["val_accuracy"] == report["val_accuracy"]
    assert class_accuracy(back, vx, vy) == class_accuracy(model, vx, vy)
    assert class_accuracy(back, vx, (vy + 1) % 3) < 0.2  # wrong labels score low: the measure can fail


def _write_tokens(root, tok, family):
    meta_grid = list(tok.patch_nums) if family == "msvq" else [32 // tok.downsample]
    counts = {}
    for split, n, seed in (("train", 48, 0), ("val", 12, 1)):
        img, lab = colour_images(n, seed)
        with torch.no_grad():
            scales = encode_tokens(tok, img.float() / 127.5 - 1)
        samples = [{"key": f"{split}{i:03d}", "label": int(lab[i]), "class_name": "rgb"[lab[i]], "caption": None,
                    "source_id": str(i), "scales": [s[i].numpy() for s in scales]} for i in range(n)]
        counts[split] = write_token_split(samples, root / split, vocab_size=tok.vocab_size)
    (root / "classes.json").write_text(json.dumps(["r", "g", "b"]))
    (root / "meta.json").write_text(json.dumps({"family": family, "grid": meta_grid, "vocab_size": tok.vocab_size,
                                                "counts": counts}))


def _params(tmp_path, **gen):
    train = {"steps": 6, "batch_size": 8, "log_every": 2, "eval_every": 3, "checkpoint_every": 3, "warmup_steps": 1}
    p = {
        "seed": 0,
        "generator": {
            "device": "cpu",
            "ar": {"n_layer": 1, "n_head": 2, "n_embd": 16, "train": train, "sample": {"top_k": 8}},
            "maskgit": {"hidden_dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "train": train, "sample": {"steps": 3}},
            "var": {"depth": 1, "embed_dim": 16, "num_heads": 2, "train": train},
            "classifier": {"width": 4, "epochs": 1, "batch_size": 16},
            "eval": {"samples_per_class": 2, "batch_size": 4, "grid_per_class": 3},
        },
    }
    for fam, extra in gen.items():
        p["generator"][fam].update(extra)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_pretrain_generator_stage_end_to_end(tmp_path):
    from stages import pretrain_generator

    vq, ms = tiny_vqgan(), tiny_msvq()
    save_tokenizer(tmp_path / "tok" / "vqgan.pt", vq)
    save_tokenizer(tmp_path / "tok" / "msvq.pt", ms)
    _write_tokens(tmp_path / "tokens" / "vqgan", vq, "vqgan")
    _write_tokens(tmp_path / "tokens" / "msvq", ms, "msvq")
    x, y = colour_images(60, 2)
    model, rep = train_classifier(x, y, x, y, num_classes=3, width=4, epochs=1, batch_size=16, seed=0)
    save_classifier(tmp_path / "cls" / "model.pt", model, ["r", "g", "b"], val_accuracy=rep["val_accuracy"])
    params = _params(tmp_path)
    for fam, tok in (("ar", "vqgan"), ("maskgit", "vqgan"), ("var", "msvq")):
        out = tmp_path / "gen" / fam
        m = pretrain_generator.main(["--family", fam, "--tokens", str(tmp_path / "tokens" / tok),
                                     "--tokenizer", str(tmp_path / "tok" / f"{tok}.pt"),
                                     "--classifier", str(tmp_path / "cls" / "model.pt"), "--out", str(out),
                                     "--params", str(params)])
        assert sorted(p.name for p in out.iterdir()) == ["loss.csv", "metrics.json", "model.pt", "samples.png", "train_state.pt"]
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["trained"] and saved["steps"] == 6 and saved["samples"] == 6
        assert 0.0 <= saved["sample_class_accuracy"] <= 1.0 and set(saved["per_class_accuracy"]) == {"r", "g", "b"}
        assert 0.0 <= saved["reconstruction_class_accuracy"] <= 1.0
        assert m["sample_images_per_second"] > 0
        lines = (out / "loss.csv").read_text().splitlines()
        assert lines[0] == "step,loss,lr,val_loss" and len(lines) == 4
        bb = load_backbone(fam, out / "model.pt", tmp_path / "tok" / f"{tok}.pt", device="cpu")
        assert bb.sample_images(torch.tensor([0, 1]), seed=0, batch_size=2).shape == (2, 3, 32, 32)

    # a named official checkpoint: nothing is trained, the file is imported strictly
    official = tmp_path / "var_official.pth"
    torch.save({"trainer": {"var_wo_ddp": load_generator(tmp_path / "gen" / "var" / "model.pt").state_dict()}}, official)
    params = _params(tmp_path, var={"checkpoint": str(official)})
    out = tmp_path / "gen" / "var_imported"
    pretrain_generator.main(["--family", "var", "--tokens", str(tmp_path / "tokens" / "msvq"),
                             "--tokenizer", str(tmp_path / "tok" / "msvq.pt"), "--classifier", str(tmp_path / "none.pt"),
                             "--out", str(out), "--params", str(params)])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["trained"] is False and saved["checkpoint"] == str(official)
    assert (out / "loss.csv").read_text().strip() == "step,loss,lr,val_loss"
    # ... and a checkpoint of the wrong family fails with a clear message
    params = _params(tmp_path, ar={"checkpoint": str(official)})
    with pytest.raises(Exception, match="holds a 'var' generator checkpoint, but a 'ar' model"):
        pretrain_generator.main(["--family", "ar", "--tokens", str(tmp_path / "tokens" / "vqgan"),
                                 "--tokenizer", str(tmp_path / "tok" / "vqgan.pt"), "--out", str(tmp_path / "x"),
                                 "--params", str(params)])


def test_params_defaults_and_errors():
    p = validate_params({})
    assert p.generator.ar.sample.top_p == 0.6 and p.generator.maskgit.train.label_smoothing == 0.1
    with pytest.raises(ConfigError, match="generator.ar.order"):
        validate_params({"generator": {"ar": {"order": "diagonal"}}})
    with pytest.raises(ConfigError, match="divisible"):
        validate_params({"generator": {"maskgit": {"hidden_dim": 30, "heads": 4}}})
    with pytest.raises(ConfigError, match="unknown key"):
        validate_params({"generator": {"var": {"width": 3}}})


def test_train_classifier_stage(tmp_path):
    from stages import train_classifier as stage

    from genvpt.datasets.shards import encode_png, write_split
    from PIL import Image

    data = tmp_path / "prepared"
    for split, n, seed in (("train", 48, 0), ("val", 12, 1)):
        img, lab = colour_images(n, seed)
        samples = [{"key": f"{split}{i:03d}", "png": encode_png(Image.fromarray(img[i].permute(1, 2, 0).numpy())),
                    "label": int(lab[i]), "class_name": "rgb"[lab[i]], "caption": None, "source_id": str(i),
                    "width": 32, "height": 32} for i in range(n)]
        write_split(samples, data / split, maxcount=100)
    (data / "classes.json").write_text(json.dumps(["r", "g", "b"]))
    params = _params(tmp_path)
    out = tmp_path / "cls"
    metrics = stage.main(["--data", str(data), "--out", str(out), "--params", str(params)])
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "metrics.json", "model.pt"]
    assert metrics["train_images"] == 48 and metrics["val_images"] == 12 and 0 <= metrics["val_accuracy"] <= 1
    assert load_classifier(out).class_names == ["r", "g", "b"]
