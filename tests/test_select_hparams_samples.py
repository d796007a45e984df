"""benchmarks/select_hparams.py end to end on a tiny checkout: ``--criterion samples`` samples every candidate and the
frozen backbone with the pipeline's sampler, scores them on the real VAL images (FD-CLIP, class accuracy under the
score stage's probe, texture share) and chooses by the documented rule; ``--criterion loss`` keeps the old fields and
choice. The checkout (params.yaml shrunk by tests/_tiny_pipeline.py, a prepared shapes target, a random VQGAN, its
tokens, a random AR generator and a random tiny CLIP) is built with the library in a few seconds."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.usefixtures("one_thread")

VALUES = ["0.001", "0.3"]
ARGS = ["--config", "vpt-ar", "--key", "train.lr", "--values", *VALUES, "--set", "init=condition"]
LOSS_ROW_KEYS = {"value", "val_loss_before", "val_loss_after", "final_train_loss", "trainable_params", "seconds"}


def _load(name: str = "select_hparams"):
    if str(BENCH) not in sys.path:  # the benchmark imports `_common` as a script does
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_genvpt_bench_{name}_t", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build_checkout(root: Path) -> None:
    """params.yaml and the data/ files the benchmark reads, made with the library (random-weight models)."""
    import torch

    from _tiny_pipeline import tiny_params
    from genvpt.clip import build_clip, save_clip
    from genvpt.config import load_params
    from genvpt.datasets.prepare import prepare_dataset
    from genvpt.generators import save_generator
    from genvpt.generators.train import build_model as build_generator
    from genvpt.tokenizers import save_tokenizer, token_grid
    from genvpt.tokenizers.train import build_model as build_tokenizer, model_config
    from stages import tokenize

    p = tiny_params(configs=("vpt-ar",))
    p["dataset"]["shapes"]["images_per_class"] = 10  # 3 classes: 6 train / 2 val / 2 test each
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    params = load_params(root / "params.yaml")
    data = root / "data"
    prepare_dataset(params.dataset, params.prepare, data / "prepared" / "target")
    torch.manual_seed(0)
    tcfg = model_config("vqgan", params.tokenizer.vqgan, params.source.image_size)
    tok = build_tokenizer("vqgan", tcfg)
    save_tokenizer(data / "tokenizers" / "vqgan" / "model.pt", tok)
    tokenize.main(["--family", "vqgan", "--tokenizer", str(data / "tokenizers" / "vqgan" / "model.pt"),
                   "--data", str(data / "prepared" / "target"), "--out", str(data / "tokens" / "vqgan" / "target"),
                   "--params", str(root / "params.yaml"), "--no-progress"])
    gen = build_generator("ar", params.generator, vocab_size=tcfg.n_embed, grid=token_grid(tok, params.source.image_size),
                          num_classes=len(params.source.shapes.classes))
    save_generator(data / "generators" / "ar" / "model.pt", gen)
    save_clip(data / "clip" / "model.pt", build_clip(params.clip.model))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    import os

    root = tmp_path_factory.mktemp("select")
    _build_checkout(root)
    mod = _load()
    out = root / "results"
    old = os.environ.get("GENVPT_BENCH_RESULTS")
    os.environ["GENVPT_BENCH_RESULTS"] = str(out)
    try:
        samples = mod.main([*ARGS, "--criterion", "samples", "--samples-per-class", "4", "--name", "s"], root=root)
        loss = mod.main([*ARGS, "--name", "l"], root=root)
    finally:
        if old is None:
            os.environ.pop("GENVPT_BENCH_RESULTS", None)
        else:
            os.environ["GENVPT_BENCH_RESULTS"] = old
    return {"mod": mod, "root": root, "samples": samples, "loss": loss,
            "files": {k: json.loads((out / f"{k}.json").read_text()) for k in ("s", "l")}}


def _set(r: dict) -> dict:
    return {k: r[k] for k in ("val_fd_clip", "val_class_accuracy", "val_texture_share")}


def test_samples_criterion_records_the_val_numbers_and_follows_the_rule(runs):
    mod, res = runs["mod"], runs["samples"]
    assert res["criterion"] == "samples" and res["rule"] == mod.RULE and res["split"] == "val"
    proto = res["val_protocol"]
    assert proto["real_split"] == "val" and proto["n_reals"] == 6 and proto["n_probe_fit"] == 18
    assert proto["images_per_class"] == 4 and proto["feature_space"] == "clip"
    assert proto["texture_share"] is not None  # a shapes target in the textured domain: the score stage computes it
    r = res["results"]["vpt-ar"]
    assert [row["value"] for row in r["rows"]] == [0.001, 0.3]
    frozen = r["frozen"]
    for rec in [*r["rows"], frozen]:
        assert math.isfinite(rec["val_fd_clip"]) and rec["val_fd_clip"] >= 0
        assert 0.0 <= rec["val_class_accuracy"] <= 1.0 and 0.0 <= rec["val_texture_share"] <= 1.0
        assert rec["val_n_samples"] == 12  # 4 per class x 3 classes
    for row in r["rows"]:
        assert LOSS_ROW_KEYS <= set(row) and math.isfinite(row["val_loss_after"])
    # the adapted sets differ from each other, and the large-lr one from the frozen backbone's: each candidate was
    # sampled itself (a gated prompt starts at the frozen model, so at lr 0.001 its few steps may still sample as it)
    assert _set(r["rows"][0]) != _set(r["rows"][1]) and _set(frozen) != _set(r["rows"][1])
    # the chosen value follows the rule given the recorded numbers
    thr = 0.5 * frozen["val_class_accuracy"]
    assert r["min_class_accuracy"] == 0.5 and r["class_accuracy_threshold"] == pytest.approx(thr)
    ok = [x for x in r["rows"] if x["val_class_accuracy"] >= thr]
    assert r["qualifying"] == [x["value"] for x in ok]
    want = (min(ok, key=lambda x: x["val_fd_clip"]) if ok else max(r["rows"], key=lambda x: x["val_class_accuracy"]))
    assert r["chosen"] == want["value"]
    assert r["chosen_by_loss"] == min(r["rows"], key=lambda x: x["val_loss_after"])["value"]
    # the results file holds the same, with the settings declared and no undeclared drift
    f = runs["files"]["s"]
    assert f["results"] == json.loads(json.dumps(res["results"])) and f["rule"] == mod.RULE
    assert f["settings"]["benchmark.criterion"] == "samples" and f["settings"]["benchmark.samples_per_class"] == 4
    assert f["undeclared_differences_from_params_yaml"] == {}


def test_rule_picks_lowest_fd_among_qualifying_else_highest_class_accuracy():
    choose = _load().choose_by_samples
    frozen = {"val_class_accuracy": 0.8}  # threshold 0.4
    rows = [{"value": 1, "val_fd_clip": 0.1, "val_class_accuracy": 0.2},  # best FD but lost its class
            {"value": 2, "val_fd_clip": 0.5, "val_class_accuracy": 0.4},  # qualifies exactly at the threshold
            {"value": 3, "val_fd_clip": 0.3, "val_class_accuracy": 0.9}]
    c = choose(rows, frozen, 0.5)
    assert c["chosen"] == 3 and c["qualifying"] == [2, 3] and c["class_accuracy_threshold"] == pytest.approx(0.4)
    c = choose(rows, frozen, 1.2)  # threshold 0.96: nobody qualifies -> the highest class accuracy
    assert c["chosen"] == 3 and c["qualifying"] == [] and "no candidate qualified" in c["chosen_by"]
    rows[2]["val_class_accuracy"] = 0.1
    assert choose(rows, frozen, 2.0)["chosen"] == 2
    assert choose(rows, {"val_class_accuracy": 0.0}, 0.5)["chosen"] == 1  # everyone qualifies: lowest FD


def test_loss_criterion_is_unchanged(runs):
    res = runs["loss"]
    assert set(res) == {"settings", "split", "results"}
    assert set(res["settings"]) == {"key", "values", "set", "configs", "adaptation_train"}
    r = res["results"]["vpt-ar"]
    assert set(r) == {"key", "seed", "train_samples", "val_samples", "rows", "chosen"}
    assert all(set(row) == LOSS_ROW_KEYS for row in r["rows"])
    assert r["chosen"] == min(r["rows"], key=lambda x: x["val_loss_after"])["value"]
    # the same training as under --criterion samples (sampling comes after it)
    s = runs["samples"]["results"]["vpt-ar"]["rows"]
    for a, b in zip(r["rows"], s):
        assert {k: a[k] for k in LOSS_ROW_KEYS - {"seconds"}} == {k: b[k] for k in LOSS_ROW_KEYS - {"seconds"}}
    assert runs["files"]["l"]["settings"]["benchmark.criterion"] == "loss"


def test_settings_of_the_samples_criterion_are_params_or_declared(runs):
    import argparse

    from benchmarks._common import check_settings
    from genvpt.config import load_params

    mod = runs["mod"]
    args = argparse.Namespace(config=["vpt-ar", "vpt-maskgit"], key="init", values=["normal", "condition"], set=[],
                              criterion="samples", samples_per_class=20, min_class_accuracy=0.5)
    for params in (load_params(ROOT / "params.yaml"), load_params(runs["root"] / "params.yaml")):
        args.config = [c for c in args.config if c in params.adaptation.configs]
        st = mod.settings(params, args)
        assert check_settings(st, mod.declared_overrides, params) == []
        assert {"sample.seed", "generator.ar.sample", "clip.pretrained", "metrics.probe_c"} <= set(st)


def test_a_method_option_can_be_searched():
    from benchmarks._common import search_config
    from genvpt.adaptation.params import AdaptationParams
    from genvpt.config import load_params

    ap = load_params(ROOT / "params.yaml").adaptation
    for v in ("normal", "condition"):
        raw = search_config(ap.configs["vpt-ar"], "init", v, ["train.lr=0.003"])
        cfg = AdaptationParams(train=ap.train, configs={"vpt-ar": raw}).config("vpt-ar")
        assert cfg.options.init == v and cfg.train.lr == 0.003


def test_a_nested_training_field_and_a_boolean_can_be_searched():
    """`--key train.augment.enabled --values false` (benchmarks/select_classify.py): the value parses as a bool and
    lands in the configuration's augment overrides, the other augment fields kept from classify.train."""
    from benchmarks._common import parse_value, search_config
    from genvpt.classify.params import ClassifyParams
    from genvpt.config import load_params

    assert parse_value("false") is False and parse_value("True") is True and parse_value("null") is None
    assert parse_value("0.03") == 0.03 and parse_value("condition") == "condition"
    cp = load_params(ROOT / "params.yaml").classify
    raw = search_config(cp.configs["iip"], "train.augment.enabled", parse_value("false"), ["train.grad_clip=1.0"])
    cfg = ClassifyParams(train=cp.train, configs={"iip": raw}).config("iip")
    assert cfg.train.augment.enabled is False and cfg.train.grad_clip == 1.0
    assert cfg.train.augment.flip == cp.train.augment.flip and cfg.train.lr == cp.configs["iip"]["train"]["lr"]


def test_select_classify_states_the_spread_over_seeds_of_a_candidate():
    """A multi-seed candidate's mean val top-1 per seed (over the datasets) and its sample std over the seeds."""
    mod = _load("select_classify")
    row = {"val_top1_per_seed": {"a": {"seed-0": 0.2, "seed-1": 0.4}, "b": {"seed-0": 0.4, "seed-1": 0.8}}}
    sp = mod.seed_spread(row)
    assert sp["val_top1_mean_per_seed"] == pytest.approx({"seed-0": 0.3, "seed-1": 0.6})
    assert sp["val_top1_mean_std"] == pytest.approx(0.3 / 2 ** 0.5)
    assert mod.seed_spread({"val_top1": {"a": 0.5}}) == {}
