"""The classification methods on a tiny randomly initialised open_clip ViT: each trains a few steps and lowers the
loss on an easy synthetic task with the towers verified frozen; the loop's resume, gradient check, augmentations,
params validation and the prepared-shard loader."""
from __future__ import annotations

import json

import pytest
import torch

from genvpt.classify.data import ClassifyData
from genvpt.classify.params import ClassifyParams

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                                        "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CLASSES = ["top left", "top right", "bottom left", "bottom right"]


def tiny_clip(seed: int = 0):
    from genvpt.clip import build_clip

    torch.manual_seed(seed)
    return build_clip("genvpt-tiny-vit", model_cfg=TINY)


def quadrants(n: int, seed: int) -> ClassifyData:
    """Class k: a bright square in quadrant k of a dark noisy 32x32 image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    img = (torch.rand(n, 3, 32, 32, generator=g) * 60).to(torch.uint8)
    for i, lab in enumerate(labels.tolist()):
        r, c = divmod(lab, 2)
        img[i, :, r * 16 + 2:r * 16 + 14, c * 16 + 2:c * 16 + 14] = 230
    return ClassifyData(img, labels, list(CLASSES))


CONFIGS = {
    "pgn": {"method": "pgn", "num_prompts": 4, "library_size": 16},
    "iip": {"method": "iip", "num_prompts": 4},
    "vp": {"method": "vp", "train": {"lr": 1.0}},
    "linear-probe": {"method": "linear_probe"},
    "zero-shot": {"method": "zero_shot"},
    "finetune": {"method": "finetune", "train": {"optimizer": "adamw", "lr": 1e-3}},
    "lora": {"method": "lora", "train": {"optimizer": "adamw", "lr": 1e-2}},
}
PARAMS = ClassifyParams(train={"steps": 20, "batch_size": 16, "augment": {"enabled": False}, "eval_batch_size": 64,
                               "checkpoint_every": 5}, configs=CONFIGS)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for tiny models


@pytest.fixture(scope="module")
def data():
    return quadrants(48, 1), quadrants(24, 2)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_method_trains_and_lowers_the_loss(name, data, tmp_path):
    from genvpt.classify.train import frozen_hashes, load_classifier, train_classifier

    train, val = data
    clip = tiny_clip()
    text_before = frozen_hashes(clip)["text"]
    visual_before = frozen_hashes(clip)["visual"]
    rec = train_classifier(PARAMS.config(name), clip=clip, train_data=train, out_dir=tmp_path, seed=0,
                           eval_data={"val": val, "train": train})
    assert frozen_hashes(clip, include_visual=False)["text"] == text_before
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {"model.pt", "record.json", "curve.csv"}
    assert json.loads((tmp_path / "record.json").read_text())["name"] == name
    if name == "zero-shot":
        assert rec["steps"] == 0 and rec["trainable_params"] == 0 and "loss_before" not in rec["eval"]["val"]
        return
    ev = rec["eval"]["train"]
    assert ev["loss"] < ev["loss_before"] - 1e-3, ev  # (evaluation on fixed inputs: no augmentation noise)
    assert rec["first_loss"] > rec["final_loss"]
    assert rec["trainable_params"] > 0 and rec["trainable_pct"] > 0  # (PGN outweighs this tiny tower)
    if name == "finetune":
        assert rec["frozen_verified"] == ["text"] and frozen_hashes(clip)["visual"] != visual_before
    else:
        assert rec["frozen_verified"] == ["text", "visual"]
        assert frozen_hashes(clip)["visual"] == visual_before  # LoRA: the base weights under their own names
    # the saved file rebuilds the trained method on a fresh CLIP and scores the same
    from genvpt.classify.train import evaluate

    again = load_classifier(tmp_path / "model.pt", tiny_clip())
    assert evaluate(again, val)["top1"] == rec["eval"]["val"]["top1"]
    assert abs(evaluate(again, val)["loss"] - rec["eval"]["val"]["loss"]) < 1e-4


def test_param_counts_in_records(data, tmp_path):
    from genvpt.classify.methods.pgn import pgn_param_count
    from genvpt.classify.methods.vp import pad_param_count
    from genvpt.classify.train import build_method

    clip = tiny_clip()
    D = clip.model.visual.conv1.out_channels
    counts = {}
    for name in ("pgn", "iip", "vp", "linear-probe"):
        m = build_method(PARAMS.config(name), clip, CLASSES)
        counts[name] = sum(p.numel() for _, p in m.trainable_parameters())
        if name == "pgn":
            assert counts[name] == pgn_param_count(4, 16, D) == m.describe()["param_formula"]
    assert counts["iip"] == 4 * D
    assert counts["vp"] == pad_param_count(32, 32, 4)  # pad round(30/224 * 32) = 4
    assert counts["linear-probe"] == (32 + 1) * 4


def test_lora_starts_at_the_frozen_model_and_trains_only_adapters():
    from genvpt.classify.methods.lora import LoRAInProj
    from genvpt.classify.train import build_method
    from genvpt.classify.vit import prompted_features

    clip = tiny_clip()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = clip.model.visual(x)
    m = build_method(PARAMS.config("lora"), clip, CLASSES)
    names = [n for n, _ in m.trainable_parameters()]
    assert names and all(".lora_" in n for n in names)
    assert isinstance(clip.model.visual.transformer.resblocks[0].attn, LoRAInProj)
    assert len(m.modules_adapted) == 2 * 3  # 2 blocks x (attn.in_proj, mlp.c_fc, mlp.c_proj)
    with torch.no_grad():
        after = prompted_features(clip.model.visual, x)
        for n, p in clip.model.visual.named_parameters():
            if n.endswith("lora_B") or ".lora_B." in n:
                p.normal_()
        moved = prompted_features(clip.model.visual, x)
    assert torch.allclose(before, after, atol=1e-6)  # B = 0: the frozen model
    assert not torch.allclose(before, moved, atol=1e-3)  # and every wrapper takes effect


def test_prompt_path_equals_the_tower_without_prompts_and_changes_it_with():
    from genvpt.classify.vit import forward_canvas, prompted_features

    clip = tiny_clip().freeze()
    v = clip.model.visual
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        own = v(x)
        assert torch.allclose(prompted_features(v, x), own, atol=1e-6)
        assert torch.allclose(prompted_features(v, x, torch.zeros(2, 0, 64)), own, atol=1e-6)
        assert torch.allclose(forward_canvas(v, x), own, atol=1e-6)  # no extra rows: the model itself
        assert not torch.allclose(prompted_features(v, x, torch.randn(2, 3, 64)), own, atol=1e-3)
    with pytest.raises(TypeError, match="VisionTransformer"):
        prompted_features(torch.nn.Conv2d(3, 3, 1), x, torch.zeros(2, 1, 3))


def test_resume_equals_an_uninterrupted_run(data, tmp_path):
    from genvpt.classify.train import train_classifier

    train, _ = data
    cfg = ClassifyParams(train={"steps": 6, "batch_size": 8, "checkpoint_every": 2,
                                "augment": {"crop_scale_min": 0.5}}, configs=CONFIGS).config("pgn")
    full = train_classifier(cfg, clip=tiny_clip(), train_data=train, out_dir=tmp_path / "a", seed=3)
    stop = train_classifier(cfg, clip=tiny_clip(), train_data=train, out_dir=tmp_path / "b", seed=3, stop_after=3)
    assert stop == {"stopped_at": 3} and (tmp_path / "b" / "train_state.pt").exists()
    resumed = train_classifier(cfg, clip=tiny_clip(), train_data=train, out_dir=tmp_path / "b", seed=3)
    assert not (tmp_path / "b" / "train_state.pt").exists()
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full["final_loss"] == resumed["final_loss"]


def test_a_gradient_on_a_frozen_weight_is_caught(data, tmp_path, monkeypatch):
    from genvpt.classify.methods.iip import IIP
    from genvpt.classify.train import FrozenBackboneChanged, train_classifier

    orig = IIP.trainable_parameters

    def sneaky(self):  # claims the tower's proj is frozen, yet lets it take gradients
        self.visual.proj.requires_grad_(True)
        return orig(self)[:1]

    monkeypatch.setattr(IIP, "trainable_parameters", sneaky)
    with pytest.raises(FrozenBackboneChanged, match="received a gradient"):
        train_classifier(PARAMS.config("iip"), clip=tiny_clip(), train_data=data[0], out_dir=tmp_path)


def test_augmentations_are_seeded_per_step():
    from genvpt.classify.augment import augment_batch
    from genvpt.classify.params import AugmentParams

    imgs = quadrants(4, 0).images
    p = AugmentParams()
    state = torch.get_rng_state()
    a = augment_batch(imgs, p, (40, 40), seed=0, step=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert a.shape == (4, 3, 40, 40) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, augment_batch(imgs, p, (40, 40), seed=0, step=5))
    assert not torch.equal(a, augment_batch(imgs, p, (40, 40), seed=0, step=6))
    off = augment_batch(imgs, AugmentParams(jitter_prob=0, greyscale_prob=0, solarize_prob=0, flip=False),
                        (32, 32), seed=0, step=0)
    assert torch.allclose(off, imgs.float() / 255, atol=1e-6)  # crop scale 1 at the same size, nothing else


def test_params_validation_names_the_key():
    with pytest.raises(ValueError, match="unknown classification method"):
        ClassifyParams(configs={"x": {"method": "nope"}})
    with pytest.raises(ValueError, match=r"classify.configs.p \(method pgn\): bogus: unknown key"):
        ClassifyParams(configs={"p": {"method": "pgn", "bogus": 1}})
    with pytest.raises(ValueError, match=r"classify.configs.p.train: lr"):
        ClassifyParams(configs={"p": {"method": "pgn", "train": {"lr": -1}}})
    with pytest.raises(ValueError, match="do not take effect"):
        ClassifyParams(configs={"l": {"method": "lora", "targets": ["attn.out_proj"]}})
    cfg = ClassifyParams(train={"steps": 100}, configs={"v": {"method": "vp", "train": {"lr": 40.0,
                                                                                      "augment": {"flip": False}}}}
                         ).config("v")
    assert cfg.train.lr == 40.0 and cfg.train.warmup_steps == 50 and not cfg.train.augment.flip
    assert cfg.train.augment.jitter_prob == 0.8 and cfg.train.optimizer == "sgd" and cfg.train.min_lr_ratio == 0.01


def test_pgn_needs_a_vit_tower():
    from genvpt.clip import build_clip
    from genvpt.classify.train import build_method

    torch.manual_seed(0)
    cnn = build_clip("genvpt-tiny-cnn")
    with pytest.raises(TypeError, match="VisionTransformer"):
        build_method(PARAMS.config("pgn"), cnn, CLASSES)
    build_method(PARAMS.config("vp"), cnn, CLASSES)  # pixel-space methods work on any tower


def test_load_prepared_split(tmp_path):
    from _shapes_prepared import CLASSES as SHAPES, make_prepared
    from genvpt.classify.data import class_texts, load_prepared_split

    root = make_prepared(tmp_path / "prep")
    tr = load_prepared_split(root, "train")
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1] == 3 and len(tr) == len(tr.keys) == 6
    assert tr.class_names == SHAPES and set(tr.labels.tolist()) == {0, 1, 2}
    assert class_texts(["pickup_truck"], "This is a photo of a {class_name}") == ["This is a photo of a pickup truck"]


def test_inversion_configs_must_be_token_prompt_methods():
    ok = ClassifyParams(configs={"p": {"method": "pgn"}, "v": {"method": "vp"}}, inversion={"configs": ["p"]})
    assert ok.inversion.placement == "append"
    with pytest.raises(ValueError, match="not configurations"):
        ClassifyParams(configs={"p": {"method": "pgn"}}, inversion={"configs": ["q"]})
    with pytest.raises(ValueError, match="make no token prompts"):
        ClassifyParams(configs={"v": {"method": "vp"}}, inversion={"configs": ["v"]})


def test_example_params_block_validates():
    import yaml

    from genvpt.classify.params import EXAMPLE_BLOCK

    p = ClassifyParams.model_validate(yaml.safe_load(EXAMPLE_BLOCK)["classify"])
    assert p.clip.model == "genvpt-tiny-vit" and set(p.configs) == {"zero-shot", "linear-probe", "iip", "pgn", "vp",
                                                                     "lora", "finetune"}
    assert p.config("vp").train.lr == 40.0 and p.config("pgn").train.warmup_steps == 250
