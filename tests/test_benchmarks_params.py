"""Every benchmark runs with params.yaml's settings or declares the ones it does not take from there.

Each module in benchmarks/ exposes ``settings(params, args=None)`` (every setting it runs with; params.yaml paths
for what params give) and ``declared_overrides`` (key -> why, for anything else). The checks run on the repository's
params.yaml and on a changed copy of it: a value hard-coded in a benchmark that happens to equal today's params.yaml
fails on the copy. The models the sample / MVP-memory / tokenizer benchmarks build at the embedded size are compared
with the pretrain stages' own builders on the changed params, so a size hard-coded past the settings fails too.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_"))

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks._common import check_settings, embedded_tokenizer, settings_record  # noqa: E402


def _load(name: str):
    if str(BENCH) not in sys.path:  # for benchmarks that import `_common` as a script does (their folder on the path)
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_genvpt_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def repo_params():
    from genvpt.config import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def changed_params(repo_params):
    """params.yaml with the sizes and settings the benchmarks read changed."""
    from genvpt.config import validate_params
    from genvpt.datasets.params import SHAPE_CLASSES
    from genvpt.metrics.protocols import merge_overlay

    changes = {
        "source": {"shapes": {"classes": list(SHAPE_CLASSES[:5])}},
        "dataset": {"shapes": {"images_per_class": 7}},
        "prepare": {"shard_maxcount": 500},
        "tokenizer": {"num_threads": 2, "vqgan": {"n_embed": 64, "embed_dim": 16},
                      "msvq": {"vocab_size": 64, "z_channels": 8}, "tokenize": {"batch_size": 128}},
        "generator": {"num_threads": 1,
                      "ar": {"n_layer": 2, "n_embd": 64, "sample": {"top_p": 0.9, "cfg": 0.5}},
                      "maskgit": {"depth": 2, "hidden_dim": 64, "mlp_dim": 128, "sample": {"steps": 4, "top_p": 0.9}},
                      "var": {"depth": 2, "embed_dim": 64, "num_heads": 2, "sample": {"top_p": 0.9, "cfg": 2.0}}},
        "adaptation": {"memory_benchmark": {"depth": 8, "tau": 12, "batch_size": 4, "cpu_batch_size": 3},
                       "train": {"batch_size": 16}},
        "metrics": {"kid_subsets": 7, "diversity_centers_per_class": 3, "batch_size": 64},
        "clip": {"batch_size": 64},
    }
    data = merge_overlay(repo_params.model_dump(mode="json"), changes)
    return validate_params(data, "<changed params>")


def _shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_benchmark_is_covered():
    assert {"sample", "mvp_memory", "clip", "score", "shards", "tokenize_speed"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_settings_are_params_or_declared(name, repo_params, changed_params):
    mod = _load(name)
    assert callable(getattr(mod, "settings", None)), f"benchmarks/{name}.py defines no settings(params)"
    assert isinstance(getattr(mod, "declared_overrides", None), dict), f"benchmarks/{name}.py: no declared_overrides"
    for params in (repo_params, changed_params):
        st = mod.settings(params)
        assert st, name
        problems = check_settings(st, mod.declared_overrides, params)
        assert not problems, f"benchmarks/{name}.py:\n" + "\n".join(problems)
        rec = settings_record(st, mod.declared_overrides, params)
        assert rec["undeclared_differences_from_params_yaml"] == {}
        assert rec["settings_from_params_yaml"], f"benchmarks/{name}.py takes nothing from params.yaml"


def test_check_settings_catches_hard_coded_and_undeclared_settings(repo_params):
    # the drift this test exists for: the sample benchmark's old 512-code embedded default, sampled without nucleus
    hard = {"tokenizer.msvq.vocab_size": 512, "generator.var.sample.top_p": 0.0}
    problems = check_settings(hard, {}, repo_params)
    assert len(problems) == 2 and all("not declared" in p for p in problems)
    assert check_settings(hard, {"tokenizer.msvq.vocab_size": "why", "generator.var.sample.top_p": "why"},
                          repo_params) == []
    assert "not a params.yaml key" in check_settings({"benchmark.batch_size": 8}, {}, repo_params)[0]
    assert "names no setting" in check_settings({}, {"benchmark.batch_size": "stale"}, repo_params)[0]
    assert "no reason" in check_settings({"benchmark.batch_size": 8}, {"benchmark.batch_size": " "}, repo_params)[0]
    # a command-line override is recorded, not hidden
    rec = settings_record({"generator.var.depth": 99}, {}, repo_params)
    assert rec["undeclared_differences_from_params_yaml"] == {
        "generator.var.depth": {"used": 99, "params_yaml": repo_params.generator.var.depth}}


def _reference(params, family):
    """The embedded model as the pretrain stages build it from ``params``."""
    from genvpt.generators.train import build_model
    from genvpt.tokenizers import token_grid
    from genvpt.tokenizers.train import build_model as build_tokenizer, model_config

    tok_family = params.generator.family(family).tokenizer
    tcfg = model_config(tok_family, getattr(params.tokenizer, tok_family), params.source.image_size)
    tok = build_tokenizer(tok_family, tcfg)
    vocab = tcfg.vocab_size if tok_family == "msvq" else tcfg.n_embed
    num_classes = len(params.source.shapes.classes)
    return build_model(family, params.generator, vocab_size=vocab, grid=token_grid(tok, params.source.image_size),
                       num_classes=num_classes, Cvae=getattr(tcfg, "z_channels", None)), tok


def test_sample_benchmark_builds_and_samples_what_params_say(changed_params):
    mod = _load("sample")
    st = mod.settings(changed_params)
    for family in ("ar", "maskgit", "var"):
        model, tok, kw = mod._build({"size": mod.DEFAULT_SIZE, "family": family, "cache": True, "batch": 2}, st)
        ref, ref_tok = _reference(changed_params, family)
        assert _shapes(model) == _shapes(ref), family
        assert kw == changed_params.generator.family(family).sample.model_dump(), family
        if family == "var":
            assert _shapes(tok) == _shapes(ref_tok)
    _, (vq, ms), _ = mod._build({"size": mod.DEFAULT_SIZE, "family": "decode", "cache": None, "batch": 2}, st)
    assert vq.config.n_embed == 64 and ms.config.vocab_size == 64
    # d16 rows: published sizes (declared), params' sampling with the declared changes only
    assert st["d16.maskgit.sample"] == {**changed_params.generator.maskgit.sample.model_dump(), "cfg": 0.0, "steps": 2}
    assert st["d16.var.sample"]["top_p"] == 0.9


def test_mvp_memory_benchmark_sizes_batches_and_one_kernel(changed_params, monkeypatch):
    mod = _load("mvp_memory")
    st = mod.settings(changed_params)
    assert st["benchmark.sizes"] == ["d16", "embedded"] and st["benchmark.attention"] == "sdpa"
    var, tok = mod.build_var(st, "embedded")
    ref, ref_tok = _reference(changed_params, "var")
    assert _shapes(var) == _shapes(ref) and _shapes(tok) == _shapes(ref_tok)
    assert mod.batch_for(st, "embedded") == 16
    assert mod.batch_for(st, "d16") == (4 if torch.cuda.is_available() else 3)
    assert st["benchmark.method_overrides"]["prefilled"]["tau"] == 12 == st["benchmark.method_overrides"]["mvp"]["tau"]
    # the kernel is forced for every attention call, whatever the sequence length
    from genvpt.generators import common

    saved = common._use_math
    try:
        used = mod._force_attention("sdpa")
        q = torch.randn(1, 1, 4, 8)
        common.attend(q, q, q)
        assert used == {"sdpa"}
        monkeypatch.setattr(common, "MATH_ATTENTION_MAX_ENTRIES", 0)  # the automatic choice would now be SDPA
        used = mod._force_attention("math")
        k = torch.randn(2, 2, 16, 8)
        assert torch.allclose(common.attend(q.expand(2, 2, 4, 8), k, k),
                              torch.nn.functional.scaled_dot_product_attention(q.expand(2, 2, 4, 8), k, k), atol=1e-5)
        assert used == {"math"}
    finally:
        common._use_math = saved


def test_tokenizer_benchmark_sizes_are_params(changed_params):
    from genvpt.tokenizers.train import model_config

    mod = _load("tokenize_speed")
    st = mod.settings(changed_params)
    for family in ("vqgan", "msvq"):
        _, cfg = embedded_tokenizer(st, family)
        assert cfg == model_config(family, getattr(changed_params.tokenizer, family), changed_params.source.image_size)
    assert st["tokenizer.tokenize.batch_size"] == 128 and st["tokenizer.num_threads"] == 2


def test_stage_times_sums_what_each_stage_recorded(tmp_path, monkeypatch):
    import json

    mod = _load("stage_times")

    def put(rel, obj):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(obj))

    put("tokenizers/vqgan/metrics.json", {"train_seconds": 100.0, "eval_seconds": 5.0})
    put("generators/ar/metrics.json", {"stage_seconds": 60.0, "train_seconds": 50.0})  # the stage's own total counts
    put("adapted/vpt-ar/seed-0/record.json", {"train_time_s": 10.0})
    put("adapted/vpt-ar/seed-1/record.json", {"train_time_s": 12.0})
    put("samples/ar/seed-0/record.json", {"load_time_s": 1.0, "sample_time_s": 4.0})
    put("classify/digits/pgn/seed-0/record.json", {"train_time_s": 30.0})
    put("targets/new-classes/adapted/vpt-ar/seed-0/record.json", {"train_time_s": 7.0})
    put("targets/new-classes/samples/ar/seed-0/record.json", {"load_time_s": 0.5, "sample_time_s": 2.5})
    rows = mod.collect(tmp_path)
    assert {k: r["seconds"] for k, r in rows.items()} == {
        "pretrain_tokenizer": 105.0, "pretrain_generator": 60.0, "adapt": 22.0, "sample": 5.0, "classify": 30.0,
        "extra_target": 10.0}
    assert rows["adapt"]["instances"] == 1 and rows["adapt"]["records"] == 2
    assert rows["extra_target"]["instances"] == 1 and rows["extra_target"]["records"] == 2
    monkeypatch.setenv("GENVPT_BENCH_RESULTS", str(tmp_path / "out"))
    assert mod.main(["--data", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "out" / "stage_times.json").read_text())
    assert out["total_seconds"] == 232.0 and "score" in out["not_recorded"]
    assert mod.main(["--data", str(tmp_path / "empty")]) == 2  # nothing recorded: an error, no file
