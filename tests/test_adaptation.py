"""The adaptation layer: every method on every backbone it fits, through one training loop and one sampler; the
registries; VPT-generative's prompt generators; guarantees (frozen backbone, gradients, resume); MVP's pieces."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from genvpt.adaptation import METHODS, Method, register_method
from genvpt.adaptation.method import NoParams
from genvpt.adaptation.params import AdaptationParams
from genvpt.adaptation.sampler import load_adapted
from genvpt.adaptation.semantic import clip_contrastive_loss, state_hash
from genvpt.adaptation.train import FrozenBackboneChanged, build_method, file_source, train_adaptation
from genvpt.backbones import BACKBONES, Injections, backbone_class, soft_fhat
from genvpt.checkpoint import load_model_file
from genvpt.generators import save_generator
from genvpt.tokenizers import save_tokenizer

from _adapt_tiny import CLASSES, V, tiny_backbone, tiny_data

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"steps": 3, "batch_size": 8, "checkpoint_every": 2, "warmup_steps": 0}


def _cfg(backbone: str, method: str, train: dict | None = None, **opts):
    tok = BACKBONES[backbone].tokenizer_family
    p = AdaptationParams(configs={"x": {"backbone": backbone, "tokenizer": tok, "method": method,
                                        "train": {**FAST, **(train or {})}, **opts}})
    return p.config("x")


def _files(tmp_path, bb):
    """Save a tiny backbone's files; return (backbone loaded like the stage does, source)."""
    from genvpt.backbones import load_backbone

    b = tiny_backbone(bb)
    gp, tp = tmp_path / f"{bb}.pt", tmp_path / f"{bb}-tok.pt"
    save_generator(gp, b.generator)
    save_tokenizer(tp, b.tokenizer)
    return load_backbone(bb, gp, tp, sample_defaults=b.sample_defaults), file_source(gp, tp)


COMBOS = [
    ("ar", "vpt", {}), ("maskgit", "vpt", {}), ("ar", "vpt", {"factorization": "additive"}),
    ("maskgit", "vpt", {"factorization": "product", "condition": "instance"}),
    ("var", "mvp", {"lambda_sen": 0, "lambda_cap": 0}), ("var", "prefilled", {}), ("ar", "prefilled", {"num_tokens": 3}),
    ("ar", "lora", {}), ("maskgit", "lora", {}), ("var", "lora", {}),
    ("ar", "adapter", {}), ("maskgit", "adapter", {}), ("var", "adapter", {}),
    ("maskgit", "finetune", {}), ("ar", "scratch", {}), ("var", "finetune", {}),
    ("ar", "vpt", {"gate": True, "replace_class_token": False}), ("var", "prefilled", {"gate": True}),
]


@pytest.mark.parametrize("bb,method,opts", COMBOS, ids=[f"{b}-{m}-{len(o)}" for b, m, o in COMBOS])
def test_every_method_trains_saves_reloads_and_samples_on_its_backbones(tmp_path, bb, method, opts):
    backbone, source = _files(tmp_path, bb)
    cfg = _cfg(bb, method, **opts)
    before = state_hash(backbone.generator)
    rec = train_adaptation(cfg, backbone=backbone, data=tiny_data(bb), out_dir=tmp_path / "out", progress=False,
                           source=source, val_data=tiny_data(bb, n=6, noise_seed=9))
    assert rec["trainable_params"] > 0 and rec["backbone"] == bb and rec["method"] == method
    assert rec["backbone_trained"] == METHODS[method].trains_backbone
    assert ("generator" in rec["frozen_verified"]) != METHODS[method].trains_backbone
    if not METHODS[method].trains_backbone:
        assert state_hash(backbone.generator) == before  # base weights, LoRA folded out
    assert rec["val_loss_before"] is not None and rec["val_loss_after"] is not None
    config, sd, _ = load_model_file(tmp_path / "out" / "model.pt", "adapted")
    assert config["method"] == method and config["backbone"] == bb and sd
    sampler = load_adapted(tmp_path / "out" / "model.pt", sample_defaults=backbone.sample_defaults)
    imgs = sampler.sample_images(torch.tensor([0, 1, 2, 0]), seed=1, batch_size=3)
    assert imgs.dtype == torch.uint8 and imgs.shape == (4, 3, 16, 16)
    again = load_adapted(tmp_path / "out" / "model.pt", sample_defaults=backbone.sample_defaults)
    assert torch.equal(again.sample_images(torch.tensor([0, 1, 2, 0]), seed=1, batch_size=3), imgs)


@pytest.mark.parametrize("bb", ["ar", "maskgit"])
def test_vpt_lowers_the_loss_on_held_out_tokens_with_the_backbone_frozen(tmp_path, bb):
    backbone = tiny_backbone(bb)
    cfg = _cfg(bb, "vpt", train={"steps": 60, "batch_size": 24, "lr": 0.1, "label_drop": 0.0}, prompt_length=4,
               dropout=0.0)
    before = state_hash(backbone.generator)
    rec = train_adaptation(cfg, backbone=backbone, data=tiny_data(bb, n=48), out_dir=tmp_path, progress=False,
                           val_data=tiny_data(bb, n=24, noise_seed=11))
    assert rec["val_loss_after"] < rec["val_loss_before"] - 0.02
    assert state_hash(backbone.generator) == before and rec["frozen_verified"] == ["generator", "tokenizer"]


def test_vpt_prompt_generator_parameter_counts():
    b = tiny_backbone("ar")
    D, S, R = b.width, 5, len(CLASSES)
    from genvpt.adaptation.method import MethodInfo

    info = MethodInfo(num_classes=R, instance_labels=list(range(R)) * 4)

    def count(**opts):
        m = build_method(_cfg("ar", "vpt", prompt_length=S, **opts), b, info, 0)
        return sum(p.numel() for _, p in m.trainable_parameters())

    assert count() == (R + 1) * S * D
    assert count(factorization="additive") == (R + 1) * D + S * D + 2 * D  # + LayerNorm
    assert count(factorization="additive", dense=True) == (R + 1) * D + S * D + 2 * D + D * D + D
    assert count(factorization="product", rank=3) == (R + 1) * 3 + 3 * S * D
    assert count(condition="instance") == (4 * R + 1) * S * D


@pytest.mark.parametrize("bb", ["ar", "maskgit"])
def test_vpt_additive_prompts_start_at_the_scale_of_the_backbones_class_embeddings(bb):
    from genvpt.adaptation.method import MethodInfo

    b = tiny_backbone(bb)
    R = len(CLASSES)
    info = MethodInfo(num_classes=R, instance_labels=list(range(R)))
    labels = torch.arange(R)
    if b.null_label >= 0:
        labels = torch.cat([labels, torch.tensor([b.null_label])])
    emb_std = b.condition_embeddings(labels).std(dim=-1).mean().item()
    stds = {}
    for gain in ("embedding", "unit"):
        m = build_method(_cfg(bb, "vpt", factorization="additive", prompt_length=3, norm_gain=gain, dropout=0.0),
                         b, info, 0)
        m.setup(None)
        m.eval()
        with torch.no_grad():
            stds[gain] = m.prompts(torch.arange(R + 1)).std(dim=-1).mean().item()
    assert stds["unit"] == pytest.approx(1.0, rel=0.02)  # the released code: the LayerNorm's own unit scale
    assert stds["embedding"] == pytest.approx(emb_std, rel=0.02)  # the frozen model's input scale
    assert abs(emb_std - 1.0) > 0.05  # the tiny backbone's embeddings are not unit-scale: the two differ


def test_vpt_prompt_takes_the_class_token_slot():
    b = tiny_backbone("ar")
    g = b.generator
    tokens = tiny_data("ar", n=4).scales[0]
    prefix = torch.randn(1, 3, b.width)
    with torch.no_grad():
        a, _ = g(tokens, torch.tensor([0, 1, 2, 0]), prefix_embeds=prefix, replace_start=True)
        c, _ = g(tokens, torch.tensor([2, 2, 2, 2]), prefix_embeds=prefix, replace_start=True)
        d, _ = g(tokens, torch.tensor([0, 1, 2, 0]), prefix_embeds=prefix)
    assert torch.equal(a, c)  # the labels are not read: the prompt is the condition
    assert not torch.allclose(a, d)
    assert a.shape == (4, 16, V)
    mg = tiny_backbone("maskgit").generator
    with torch.no_grad():
        x = mg(tokens, torch.tensor([0, 1, 2, 0]), prefix_embeds=torch.randn(1, 3, 32), replace_class=True)
    assert x.shape == (4, 16, V)


@pytest.mark.parametrize("bb", ["ar", "maskgit"])
def test_guided_sampling_uses_the_null_prompt_and_ar_cache_matches(bb):
    b = tiny_backbone(bb)
    prompts = 3 * torch.randn(2, 3, b.width)
    null = 3 * torch.randn(2, 3, b.width)
    gen = b.generator
    kw = {"cfg": 30.0, "prefix_embeds": prompts, "uncond_prefix_embeds": null}
    kw.update({"replace_start": True, "top_k": 0} if bb == "ar" else {"replace_class": True, "steps": 3})
    s1 = gen.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), **kw)
    s2 = gen.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), **{**kw, "uncond_prefix_embeds": prompts})
    assert s1.shape == (2, 4, 4) and not torch.equal(s1, s2)
    if bb == "ar":
        s3 = gen.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), use_cache=False, **kw)
        assert torch.equal(s1, s3)


def test_gradients_reach_only_the_trainable_parameters():
    for bb, method in (("ar", "vpt"), ("maskgit", "lora"), ("var", "adapter")):
        b = tiny_backbone(bb)
        from genvpt.adaptation.method import MethodInfo

        m = build_method(_cfg(bb, method), b, MethodInfo(num_classes=3), 0)
        data = tiny_data(bb, n=6)
        idx = torch.arange(6)
        labels = data.labels
        inj = m.injections(labels, idx=idx, drop=torch.zeros(6, dtype=torch.bool))
        loss, _ = b.loss(b.batch(data.scales, idx), None if m.replaces_condition else labels, inj,
                         generator=torch.Generator().manual_seed(0))
        loss.backward()
        trainable = {id(p) for _, p in m.trainable_parameters()}
        for n, p in list(m.named_parameters()) + list(b.generator.named_parameters()):
            assert (p.grad is not None) == (id(p) in trainable), n  # LoRA's A: zero gradient while B is zero


def test_a_changed_backbone_fails_the_run(tmp_path, monkeypatch):
    b = tiny_backbone("ar")
    cfg = _cfg("ar", "vpt")
    import genvpt.adaptation.train as T

    orig = T._frozen_hashes
    calls = {"n": 0}

    def sneaky(backbone, clip, trains):
        calls["n"] += 1
        if calls["n"] == 2:  # after training: someone changed a frozen weight
            with torch.no_grad():
                backbone.generator.head.weight.add_(1.0)
        return orig(backbone, clip, trains)

    monkeypatch.setattr(T, "_frozen_hashes", sneaky)
    with pytest.raises(FrozenBackboneChanged, match="generator"):
        train_adaptation(cfg, backbone=b, data=tiny_data("ar"), out_dir=tmp_path, progress=False)
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("bb,method", [("maskgit", "vpt"), ("var", "lora")])
def test_resume_gives_the_uninterrupted_result(tmp_path, bb, method):
    cfg = _cfg(bb, method, train={"steps": 6, "checkpoint_every": 2})
    full = train_adaptation(cfg, backbone=tiny_backbone(bb), data=tiny_data(bb), out_dir=tmp_path / "a", progress=False)
    part = train_adaptation(cfg, backbone=tiny_backbone(bb), data=tiny_data(bb), out_dir=tmp_path / "b",
                            progress=False, stop_after=4)
    assert part == {"stopped_at": 4} and not (tmp_path / "b" / "model.pt").exists()
    resumed = train_adaptation(cfg, backbone=tiny_backbone(bb), data=tiny_data(bb), out_dir=tmp_path / "b",
                               progress=False)
    assert resumed["final_loss"] == full["final_loss"]
    _, sa, _ = load_model_file(tmp_path / "a" / "model.pt", "adapted")
    _, sb, _ = load_model_file(tmp_path / "b" / "model.pt", "adapted")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _OffsetBias(Method):
    """A method defined outside the package: one learned vector added to every input token of VAR."""

    name = "offset-bias"
    Params = NoParams

    @classmethod
    def required_features(cls, params):
        return {"input_offsets"}

    def __init__(self, params, backbone, info, *, seed=0):
        super().__init__(params, backbone, info, seed=seed)
        self.bias = torch.nn.Parameter(torch.zeros(1, 1, backbone.width))

    def _inj(self):
        return Injections(input_offsets=[self.bias.expand(1, p * p, -1) for p in self.backbone.patch_nums])

    def injections(self, labels, *, idx=None, drop=None):
        return self._inj()

    def sampling_injections(self, labels):
        return self._inj()


def test_registry_a_method_registered_from_a_test_file_trains_and_samples(tmp_path):
    register_method("offset-bias", _OffsetBias, replace=True)
    try:
        backbone, source = _files(tmp_path, "var")
        cfg = _cfg("var", "offset-bias", train={"steps": 4, "lr": 0.05})
        rec = train_adaptation(cfg, backbone=backbone, data=tiny_data("var"), out_dir=tmp_path / "o", progress=False,
                               source=source)
        assert rec["trainable_params"] == backbone.width
        s = load_adapted(tmp_path / "o" / "model.pt", sample_defaults={"cfg": 1.0})
        assert s.sample_images(torch.tensor([0, 1]), seed=0).shape == (2, 3, 16, 16)
        with pytest.raises(ValueError, match="needs \\['input_offsets'\\]"):
            _cfg("ar", "offset-bias")
    finally:
        METHODS.pop("offset-bias", None)


def test_registry_rejects_bad_configurations():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        _cfg("ar", "nope")
    with pytest.raises(ValueError, match="reads 'vqgan' tokens"):
        AdaptationParams(configs={"x": {"backbone": "ar", "tokenizer": "msvq", "method": "vpt"}})
    with pytest.raises(ValueError, match="does not offer"):
        _cfg("ar", "mvp")
    with pytest.raises(ValueError, match="promt_length: unknown key"):
        _cfg("ar", "vpt", promt_length=3)
    with pytest.raises(ValueError, match="frozen row"):
        AdaptationParams(configs={"var": {"backbone": "var", "method": "mvp"}})
    with pytest.raises(ValueError, match="unknown backbone"):
        AdaptationParams(configs={"x": {"backbone": "dit", "method": "vpt"}})
    with pytest.raises(ValueError, match="do not take effect"):
        b = tiny_backbone("var")
        from genvpt.adaptation.method import MethodInfo

        build_method(_cfg("var", "lora", targets=["attn.mat_qkv"]), b, MethodInfo(num_classes=3), 0)
    assert set(BACKBONES) >= {"ar", "maskgit", "var"} and backbone_class("ar").tokenizer_family == "vqgan"


def test_mvp_semantic_terms_leave_dropped_rows_out(tmp_path):
    from genvpt.adaptation.method import MethodInfo
    from genvpt.adaptation.train import TrainContext
    from genvpt.clip import build_clip

    torch.manual_seed(2)
    clip = build_clip("genvpt-tiny-vit", model_cfg={
        "embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}).freeze()
    b = tiny_backbone("var")
    data = tiny_data("var", n=8)
    cfg = _cfg("var", "mvp", clip_batch_size=None)
    m = build_method(cfg, b, MethodInfo(num_classes=3), 0)
    ctx = TrainContext(b, data, clip, torch.device("cpu"), 0, needs_captions=True)
    idx = torch.arange(8)
    inj = m.injections(data.labels, idx=idx, drop=torch.zeros(8, dtype=torch.bool))
    _, logits = b.loss(b.batch(data.scales, idx), data.labels, inj)
    seen = []
    orig = clip.encode_images
    clip.encode_images = lambda img: (seen.append(img.shape[0]), orig(img))[1]
    drop = torch.tensor([True, False, True, False, False, False, False, False])
    terms = m.extra_losses(ctx, logits=logits, labels=data.labels, idx=idx, drop=drop, generator=None)
    assert set(terms) == {"clip_sen", "clip_cap"} and seen == [6, 6]


def test_soft_fhat_of_confident_logits_is_the_tokenizers_fhat():
    b = tiny_backbone("var")
    tok = b.tokenizer
    data = tiny_data("var", n=5)
    gt = torch.cat(data.scales, dim=1)
    logits = 60.0 * F.one_hot(gt, V).float()
    with torch.no_grad():
        ref = tok.embed_to_fhat(tok.idxBl_to_h(data.scales), all_to_max_scale=True, last_one=False)
    f2, f3 = soft_fhat(logits, tok, [2, 3])
    assert torch.allclose(f2, ref[1], atol=1e-4) and torch.allclose(f3, ref[2], atol=1e-4)


def test_clip_loss_matches_open_clip_for_distinct_texts():
    import open_clip

    torch.manual_seed(0)
    img = F.normalize(torch.randn(6, 16), dim=-1)
    txt = F.normalize(torch.randn(6, 16), dim=-1)
    ours = clip_contrastive_loss(img, txt, torch.arange(6), 10.0)
    ref = open_clip.ClipLoss()(img, txt, torch.tensor(10.0))
    assert torch.allclose(ours, ref, atol=1e-6)


def test_adapt_stage_trains_every_seed_and_the_sample_stage_reads_it(tmp_path, monkeypatch):
    """The stages from files: adapt one configuration for two seeds, then sample its row (one set per seed)."""
    import yaml

    from genvpt.sampling import SampleSet, sample_adapted_row
    from genvpt.metrics.params import SampleParams
    from genvpt.tokenizers.token_shards import write_token_split
    from stages.adapt import main as adapt_main

    backbone, _ = _files(tmp_path, "ar")
    data = tiny_data("ar", n=12)
    tokens = tmp_path / "tokens"
    from genvpt.io import write_json

    samples = [{"key": f"train_{i:07d}", "label": int(data.labels[i]), "class_name": CLASSES[int(data.labels[i])],
                "caption": data.captions[i], "source_id": str(i), "scales": [data.scales[0][i].numpy()]}
               for i in range(len(data))]
    write_token_split(samples, tokens / "train", vocab_size=V)
    write_json(tokens / "meta.json", {"family": "vqgan", "grid": [4], "vocab_size": V,
                                     "counts": {"train": len(data)}, "tokenizer": str(tmp_path / "ar-tok.pt")})
    write_json(tokens / "classes.json", CLASSES)
    params = {"adaptation": {"seeds": [0, 1], "configs": {"vpt-ar": {
        "backbone": "ar", "tokenizer": "vqgan", "method": "vpt", "prompt_length": 2, "train": FAST}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    summary = adapt_main(["--config", "vpt-ar", "--tokens", str(tokens), "--generator", str(tmp_path / "ar.pt"),
                          "--out", str(tmp_path / "adapted"), "--summary", str(tmp_path / "s.json"),
                          "--params", str(tmp_path / "params.yaml")])
    assert summary["n_seeds"] == 2 and "final_loss_std" in summary
    assert json.loads((tmp_path / "s.json").read_text())["seeds"] == [0, 1]
    recs = sample_adapted_row(SampleParams(images_per_class=2, isolate=False, device="cpu"), CLASSES,
                              tmp_path / "samples" / "vpt-ar", models_dir=str(tmp_path / "adapted"), seeds=[0, 1])
    assert [r["seed"] for r in recs] == [0, 1] and all(r["spread_over"] == "training_seed" for r in recs)
    assert SampleSet(tmp_path / "samples" / "vpt-ar" / "seed-1").load_images().shape[0] == 6


@pytest.mark.parametrize("layout", ["taming", "valeoai"])
def test_official_layout_checkpoints_take_a_prompt_and_stay_unchanged(tmp_path, layout):
    """A taming cond_transformer checkpoint (Lightning container, shared code/class table) and a valeoai MaskGIT
    file (``model_state_dict``), random weights in the official key layouts: VPT trains on them for a few steps
    through the same loader, loop and sampler, and the backbone is unchanged."""
    from genvpt.backbones import load_backbone
    from genvpt.generators.ar import GPT, ARConfig
    from genvpt.generators.maskgit import MaskGIT, MaskGITConfig
    from _adapt_tiny import tiny_vqgan

    torch.manual_seed(0)
    if layout == "taming":
        fam, hints = "ar", {"n_head": 2}
        model = GPT(ARConfig(vocab_size=V, grid=4, num_classes=3, n_layer=2, n_head=2, n_embd=32,
                             token_layout="taming")).eval()
        torch.save({"state_dict": {f"transformer.{k}": v for k, v in model.state_dict().items()}},
                   tmp_path / "last.ckpt")
        path = tmp_path / "last.ckpt"
    else:
        fam, hints = "maskgit", {"heads": 2, "vocab_size": V}
        model = MaskGIT(MaskGITConfig(vocab_size=V, grid=4, num_classes=3, hidden_dim=32, depth=2, heads=2,
                                      mlp_dim=64, dropout=0.0)).eval()
        torch.save({"iter": 1, "model_state_dict": model.state_dict()}, tmp_path / "MaskGIT.pth")
        path = tmp_path / "MaskGIT.pth"
    save_tokenizer(tmp_path / "tok.pt", tiny_vqgan())
    backbone = load_backbone(fam, path, tmp_path / "tok.pt", sample_defaults={"cfg": 0.0} if fam == "ar" else
                             {"steps": 3, "cfg": 1.0}, **hints)
    sd_before = {k: v.clone() for k, v in model.state_dict().items()}
    before = state_hash(backbone.generator)
    cfg = _cfg(fam, "vpt", prompt_length=2, train={"label_drop": 0.0})
    rec = train_adaptation(cfg, backbone=backbone, data=tiny_data(fam), out_dir=tmp_path / "o", progress=False,
                           source=file_source(path, tmp_path / "tok.pt", **hints))
    assert state_hash(backbone.generator) == before and "generator" in rec["frozen_verified"]
    assert all(torch.equal(sd_before[k], v) for k, v in backbone.generator.state_dict().items())
    s = load_adapted(tmp_path / "o" / "model.pt", sample_defaults=backbone.sample_defaults)
    assert s.sample_images(torch.tensor([0, 1]), seed=0).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("bb", ["ar", "maskgit"])
def test_vpt_condition_init_starts_near_the_frozen_conditioning(bb):
    """init: condition puts the frozen class token's own embedding in the prompt: with one prompt token (and no
    noise) the prompted loss equals the frozen class-conditional loss exactly."""
    from genvpt.adaptation.method import MethodInfo
    from genvpt.adaptation.train import TrainContext

    b = tiny_backbone(bb)
    data = tiny_data(bb, n=6)
    m = build_method(_cfg(bb, "vpt", prompt_length=1, init="condition", init_std=0.0, dropout=0.0), b,
                     MethodInfo(num_classes=3), 0)
    m.setup(TrainContext(b, data, None, torch.device("cpu"), 0, False))
    m.eval()
    idx = torch.arange(6)
    batch = b.batch(data.scales, idx)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    with torch.no_grad():
        prompted, _ = b.loss(batch, None, m.injections(data.labels, idx=idx), generator=g())
        frozen, _ = b.loss(batch, data.labels, Injections(), generator=g())
    # (MaskGIT's class token sits after the image tokens; bidirectional attention does not see the order)
    assert torch.allclose(prompted, frozen, atol=1e-5)


@pytest.mark.parametrize("bb,method,opts", [("ar", "vpt", {"replace_class_token": False}), ("maskgit", "vpt",
                         {"replace_class_token": False}), ("var", "prefilled", {}), ("ar", "prefilled", {})])
def test_gated_prompts_start_at_the_frozen_backbone_and_open_with_training(tmp_path, bb, method, opts):
    """gate: true (zero-init gated prompt attention): at step 0 the prompted loss is the frozen backbone's, whatever
    the prompts hold; without the gate the same prompts move it; training opens the gates."""
    from genvpt.adaptation.method import MethodInfo
    from genvpt.adaptation.train import TrainContext

    b = tiny_backbone(bb)
    data = tiny_data(bb, n=6)
    idx = torch.arange(6)
    batch = b.batch(data.scales, idx)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    losses = {}
    for gate in (True, False):
        m = build_method(_cfg(bb, method, gate=gate, init_std=0.5, **opts), b, MethodInfo(num_classes=3), 0)
        m.setup(TrainContext(b, data, None, torch.device("cpu"), 0, False))
        m.eval()
        with torch.no_grad():
            losses[gate], _ = b.loss(batch, data.labels, m.injections(data.labels, idx=idx), generator=g())
    with torch.no_grad():
        frozen, _ = b.loss(batch, data.labels, Injections(), generator=g())
    assert torch.allclose(losses[True], frozen, atol=1e-5)
    assert not torch.allclose(losses[False], frozen, atol=1e-3)
    backbone, source = _files(tmp_path, bb)
    before = state_hash(backbone.generator)
    train_adaptation(_cfg(bb, method, {"lr": 0.05}, gate=True, **opts), backbone=backbone, data=tiny_data(bb),
                     out_dir=tmp_path / "out", progress=False, source=source)
    assert state_hash(backbone.generator) == before
    _, sd, _ = load_model_file(tmp_path / "out" / "model.pt", "adapted")
    gate = next(v for k, v in sd.items() if k.endswith("gate"))
    assert gate.shape == backbone.gate_shape and gate.abs().max() > 0


def test_a_gated_vpt_prompt_needs_the_class_token():
    with pytest.raises(Exception, match="replace_class_token: false"):
        _cfg("ar", "vpt", gate=True)
