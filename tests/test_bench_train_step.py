"""benchmarks/train_step.py --smoke: the prompt step vs the fine-tuning step on the embedded backbones (issue #16 §3).

One smoke run (embedded size, 1 warm-up + 2 timed steps per method, each pair in its own process), its results
written to a temporary folder; the checks read what it wrote.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAIRS = {"mvp/finetune": "var", "vpt-ar/finetune-ar": "ar", "vpt-maskgit/finetune-maskgit": "maskgit"}


def _load():
    spec = importlib.util.spec_from_file_location("_genvpt_bench_train_step", BENCH / "train_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENVPT_BENCH_RESULTS", str(out))
    try:
        returned = _load().main(["--smoke"])
    finally:
        mp.undo()
    path = out / "train_step.json"
    assert path.is_file()
    return returned, json.loads(path.read_text())


def test_smoke_has_the_three_pairs_at_the_embedded_size(smoke):
    _, res = smoke
    assert res["smoke"] is True
    assert list(res["sizes"]) == ["embedded"]
    runs = res["sizes"]["embedded"]
    assert set(runs) == set(PAIRS)
    for name, family in PAIRS.items():
        r = runs[name]
        prompt_cfg, finetune_cfg = name.split("/")
        assert r["backbone"] == family
        assert r["prompt"]["config"] == prompt_cfg and r["finetune"]["config"] == finetune_cfg
        assert r["prompt"]["method"] == prompt_cfg.split("-")[0] and r["finetune"]["method"] == "finetune"
        assert r["batch_size"] == res["settings"]["adaptation.train.batch_size"]
    assert res["settings"]["benchmark.steps"] == 2 and res["settings"]["benchmark.warmup"] == 1
    assert res["undeclared_differences_from_params_yaml"] == {}


def test_prompt_trains_fewer_parameters_and_the_ratio_is_finetune_over_prompt(smoke):
    _, res = smoke
    for name, r in res["sizes"]["embedded"].items():
        p, f = r["prompt"], r["finetune"]
        assert 0 < p["trainable_params"] < f["trainable_params"], name
        assert f["trainable_params"] == f["backbone_params"] == p["backbone_params"], name  # every generator weight
        for m in (p, f):
            assert len(m["step_seconds"]) == 2 and all(t > 0 for t in m["step_seconds"]), name
            assert m["median_seconds"] > 0
            assert len(m["losses"]) == 3  # warm-up + timed steps, all finite
            assert m["attention_kernel"] in ("explicit", "sdpa", "mixed")
        assert r["ratio_finetune_over_prompt"] == pytest.approx(f["median_seconds"] / p["median_seconds"], rel=1e-12)


def test_frozen_backbone_is_bit_identical_and_the_finetuned_one_changed(smoke):
    _, res = smoke
    for name, r in res["sizes"]["embedded"].items():
        p, f = r["prompt"], r["finetune"]
        assert r["same_initial_weights"] and p["generator_sha256_before"] == f["generator_sha256_before"], name
        assert p["generator_sha256_after"] == p["generator_sha256_before"] and not p["generator_changed"], name
        assert r["frozen_unchanged"] is True
        assert f["generator_sha256_after"] != f["generator_sha256_before"] and f["generator_changed"], name


def test_main_returns_what_it_wrote(smoke):
    returned, res = smoke
    assert returned["sizes"] == res["sizes"]
    assert Path(returned["path"]).name == "train_step.json"
