"""The prompt training loop (genvpt/prompts/train.py) and sampling from its result, on tiny random models."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

from genvpt.checkpoint import load_model_file
from genvpt.prompts.mvp import build_prompted, clip_contrastive_loss, soft_fhat
from genvpt.prompts.params import PromptConfig
from genvpt.prompts.sampler import PromptedSampler
from genvpt.prompts.train import FrozenBackboneChanged, train_prompt

from _prompts_tiny import tiny_clip, tiny_data, tiny_tokenizer, tiny_var

FAST = dict(steps=4, batch_size=8, warmup_steps=0, checkpoint_every=2, lr=0.05)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


@pytest.fixture(scope="module")
def data(tok):
    return tiny_data(tok, n=16)


def test_training_lowers_the_loss_and_keeps_the_backbone_frozen(tmp_path, tok, clip, data):
    cfg = PromptConfig(method="mvp", tau=4, steps=30, batch_size=16, lr=0.1, warmup_steps=0, label_drop=0.0,
                       lambda_sen=0.05, lambda_cap=0.05)
    val = tiny_data(tok, n=8, noise_seed=11)  # same class templates, other noise: held out
    rec = train_prompt("mvp", cfg, var=tiny_var(), tokenizer=tok, data=data, out_dir=tmp_path, clip=clip,
                       progress=False, val_data=val)
    assert rec["final_ce"] < rec["first_ce"] - 0.02
    assert rec["val_ce_after"] < rec["val_ce_before"] and rec["val_samples"] == 8
    assert rec["frozen_verified"] == ["clip", "tokenizer", "var"] and not rec["backbone_trained"]
    assert rec["trainable_params"] == 12 * 32 and 0 < rec["trainable_pct"] < 100
    assert rec["sequence_length"] == 30 and rec["prompt_tokens_per_scale"] == [0, 4, 4, 4]
    assert rec["final_clip_sen"] > 0 and rec["final_clip_cap"] > 0 and rec["peak_memory_mb"] > 0
    rows = list(csv.DictReader(open(tmp_path / "curve.csv")))
    assert len(rows) == 30 and set(rows[0]) == {"step", "loss", "ce", "clip_sen", "clip_cap", "lr"}
    config, sd, _ = load_model_file(tmp_path / "model.pt", "prompt")
    assert set(sd) == {"prompt.tokens", "prompt.positions"} and config["method"] == "mvp"
    assert json.loads((tmp_path / "record.json").read_text())["name"] == "mvp"
    assert not (tmp_path / "train_state.pt").exists()


@pytest.mark.parametrize("method,prefixes", [
    ("mvp", ("prompt.",)), ("prefilled", ("prompt.",)), ("lora", ("var.",)), ("mvp_t2i", ("prompt.", "text.")),
])
def test_gradients_reach_only_the_trainable_parameters(tok, clip, data, method, prefixes):
    cfg = PromptConfig(method=method, tau=4, first_scale=method == "mvp_t2i", init_std=0.02)
    sent = clip.encode_texts(data.sentences).detach()
    model = build_prompted(tiny_var(), cfg, clip_dim=sent.shape[1])
    labels = data.labels[:8]
    gt = [s[:8] for s in data.scales]
    with torch.no_grad():
        x = tok.idxBl_to_var_input(gt)
    if method == "mvp_t2i":
        drop = torch.arange(8) % 4 == 0  # some texts replaced by the learned null
        logits = model(None, x, cond_embeds=model.condition(sent[labels], drop))
    else:
        logits = model(labels, x)
    ce = F.cross_entropy(logits.reshape(-1, 32), torch.cat(gt, 1).reshape(-1))
    (f,) = soft_fhat(logits, tok, [4])
    loss = ce + clip_contrastive_loss(clip.encode_images(tok.fhat_to_img(f)), sent, labels, 10.0)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable and trainable
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in with_grad)
    assert all(n.startswith(prefixes) for n in trainable)
    if method == "lora":
        assert all(".lora_" in n for n in trainable)
    assert all(p.grad is None for p in tok.parameters()) and all(p.grad is None for p in clip.parameters())


def test_a_changed_backbone_fails_the_run(tmp_path, tok, data):
    var = tiny_var()
    calls = []

    def tamper(module, args, output):  # a bug elsewhere writing into the frozen weights mid-training
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                module.head.bias.add_(1e-3)

    var.register_forward_hook(tamper)
    cfg = PromptConfig(method="mvp", tau=4, lambda_sen=0, lambda_cap=0, **FAST)
    with pytest.raises(FrozenBackboneChanged, match="var"):
        train_prompt("x", cfg, var=var, tokenizer=tok, data=data, out_dir=tmp_path, progress=False)
    assert not (tmp_path / "record.json").exists() and not (tmp_path / "model.pt").exists()


def test_resume_gives_the_uninterrupted_result(tmp_path, tok, clip, data):
    cfg = PromptConfig(method="mvp", tau=4, soft_codes="gumbel", **FAST)
    train_prompt("a", cfg, var=tiny_var(), tokenizer=tok, data=data, out_dir=tmp_path / "a", clip=clip, progress=False)
    part = train_prompt("b", cfg, var=tiny_var(), tokenizer=tok, data=data, out_dir=tmp_path / "b", clip=clip,
                        stop_after=2, progress=False)
    assert part == {"stopped_at": 2} and (tmp_path / "b" / "train_state.pt").exists()
    assert not (tmp_path / "b" / "model.pt").exists()
    train_prompt("b", cfg, var=tiny_var(), tokenizer=tok, data=data, out_dir=tmp_path / "b", clip=clip, progress=False)
    _, sa, _ = load_model_file(tmp_path / "a" / "model.pt", "prompt")
    _, sb, _ = load_model_file(tmp_path / "b" / "model.pt", "prompt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ca = [r["loss"] for r in csv.DictReader(open(tmp_path / "a" / "curve.csv"))]
    cb = [r["loss"] for r in csv.DictReader(open(tmp_path / "b" / "curve.csv"))]
    assert ca == cb and len(ca) == 4


@pytest.mark.parametrize("method", ["prefilled", "lora", "finetune"])
def test_baselines_train_save_and_reload(tmp_path, tok, data, method):
    cfg = PromptConfig(method=method, tau=4, lambda_sen=0, lambda_cap=0, **FAST)
    rec = train_prompt(method, cfg, var=tiny_var(), tokenizer=tok, data=data, out_dir=tmp_path, progress=False)
    assert rec["backbone_trained"] == (method == "finetune")
    assert ("var" in rec["frozen_verified"]) == (method != "finetune") and "tokenizer" in rec["frozen_verified"]
    if method == "prefilled":
        assert rec["sequence_length"] == 30 + 12 and rec["trainable_params"] == 12 * 32
    if method == "finetune":
        assert rec["trainable_pct"] == 100.0
    config, sd, _ = load_model_file(tmp_path / "model.pt", "prompt")
    fresh = build_prompted(tiny_var(), PromptConfig.model_validate(config["prompt_config"]))
    x = tok.idxBl_to_var_input(data.scales)
    with torch.no_grad():
        before = fresh(data.labels, x)
        fresh.load_adapter_state_dict(sd)
        after = fresh(data.labels, x)
    assert not torch.allclose(before, after)  # the trained state changes the model
    sampler = PromptedSampler(fresh, tok, sentences=data.sentences)
    a = sampler.sample_images(torch.tensor([0, 1, 2]), seed=5, batch_size=2, cfg=1.0)
    b = sampler.sample_images(torch.tensor([0, 1, 2]), seed=5, batch_size=2, cfg=1.0)
    assert a.dtype == torch.uint8 and a.shape == (3, 3, 8, 8) and torch.equal(a, b)


def test_text_to_image_trains_and_samples_from_free_text(tmp_path, tok, clip, data):
    cfg = PromptConfig(method="mvp_t2i", tau=4, first_scale=True, **FAST)
    var = tiny_var()
    rec = train_prompt("t2i", cfg, var=var, tokenizer=tok, data=data, out_dir=tmp_path, clip=clip, progress=False)
    assert rec["prompt_tokens_per_scale"] == [1, 4, 4, 4] and rec["frozen_verified"] == ["clip", "tokenizer", "var"]
    config, sd, _ = load_model_file(tmp_path / "model.pt", "prompt")
    assert {"text.proj.weight", "text.proj.bias", "text.null", "prompt.tokens"} <= set(sd)
    model = build_prompted(tiny_var(), PromptConfig.model_validate(config["prompt_config"]), clip_dim=config["clip_dim"])
    model.load_adapter_state_dict(sd)
    sampler = PromptedSampler(model, tok, sentences=config["sentences"], clip=clip)
    texts = ["a small red star in the upper left", "a big circle on a striped background"]
    kw = dict(seed=0, batch_size=2, cfg=3.0, temperature=0.0)
    a = sampler.sample_texts(texts, **kw)
    assert a.shape == (2, 3, 8, 8) and a.dtype == torch.uint8
    assert "_cond" not in vars(model.var)  # the guidance shim is undone
    with torch.no_grad():
        model.text.null.add_(torch.randn_like(model.text.null))
    assert not torch.equal(sampler.sample_texts(texts, **kw), a)  # guidance uses the learned null text
    assert sampler.sample_images(torch.tensor([1]), seed=0, batch_size=1).shape == (1, 3, 8, 8)


def test_stage_trains_from_files_and_the_sampler_kind_loads_it(tmp_path, tok, data):
    """stages/train_prompt.py on model files + token shards, then genvpt.sampling's 'prompt' kind samples it."""
    import yaml

    from genvpt import sampling
    from genvpt.generators import save_generator
    from genvpt.io import write_json
    from genvpt.metrics.params import SampleConfig
    from genvpt.tokenizers import save_tokenizer
    from genvpt.tokenizers.token_shards import write_token_split
    from stages.train_prompt import main

    save_generator(tmp_path / "var.pt", tiny_var())
    save_tokenizer(tmp_path / "tok.pt", tok)
    tokens = tmp_path / "tokens"
    samples = [{"key": f"train_{i:04d}", "label": int(data.labels[i]), "class_name": data.class_names[int(data.labels[i])],
                "caption": data.captions[i], "scales": [s[i] for s in data.scales]} for i in range(len(data))]
    n = write_token_split(samples, tokens / "train", vocab_size=32)
    write_json(tokens / "meta.json", {"family": "msvq", "grid": [1, 2, 3, 4], "vocab_size": 32, "counts": {"train": n}})
    write_json(tokens / "classes.json", data.class_names)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"prompts": {
        "base": {"steps": 3, "batch_size": 8, "lambda_sen": 0.0, "lambda_cap": 0.0},
        "configs": {"mvp-small": {"method": "mvp", "tau": 4}}}}))
    out = tmp_path / "prompts" / "mvp-small"
    rec = main(["--config", "mvp-small", "--tokens", str(tokens), "--generator", str(tmp_path / "var.pt"),
                "--tokenizer", str(tmp_path / "tok.pt"), "--out", str(out), "--params", str(params)])
    assert rec["steps"] == 3 and rec["train_samples"] == len(data) and (out / "model.pt").is_file()
    assert rec["source"]["generator_sha256"]

    cfg = SampleConfig(name="mvp-small", kind="prompt", generator=str(out / "model.pt"))
    sampler = sampling._call_loader(sampling._loader("prompt"), cfg, torch.device("cpu"), None)
    imgs = sampler.sample_images(torch.tensor([0, 1, 2, 3]), seed=1, batch_size=4)
    assert imgs.shape == (4, 3, 8, 8) and imgs.dtype == torch.uint8
    # the prompt file refuses a backbone that changed since training
    save_generator(tmp_path / "var.pt", tiny_var(seed=9))
    with pytest.raises(Exception, match="sha256"):
        sampling._call_loader(sampling._loader("prompt"), cfg, torch.device("cpu"), None)


def test_peak_memory_measures_the_phase_not_the_process():
    # In a fresh process: inside a long pytest run, glibc may serve the allocation from heap memory that earlier
    # tests freed but that is still resident, and then RSS (rightly) does not grow.
    import json
    import subprocess
    import sys

    code = """
import json, torch
from genvpt.prompts.memory import PeakMemory
big = torch.ones(96 * 2**20 // 4); big += 1          # allocated before the phase: not counted
with PeakMemory("cpu") as pm:
    x = torch.ones(64 * 2**20 // 4); x += 1; del x   # 64 MiB touched inside the phase
print(json.dumps({"kind": pm.kind, "delta": pm.delta_mb, "peak": pm.peak_mb, "start": pm.start_mb}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    pm = json.loads(out.strip().splitlines()[-1])
    assert pm["kind"].startswith("cpu_")
    assert 50 < pm["delta"] < 96 + 50 and pm["peak"] >= pm["start"]
