"""genvpt/clip/ (model.py and the pretrain_clip loop): tiny open_clip models built here, one random ViT-B-32 round trip."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from genvpt.checkpoint import CheckpointMismatch
from genvpt.clip import (ClipModel, ClipWeightsError, QuickGeluWarning, build_clip, is_torchscript_file, load_clip,
                         save_clip)
from genvpt.clip.params import ClipParams, ClipTrainParams

TINY = "genvpt-tiny-cnn"  # the embedded default: conv tower (timm-registered) + open_clip text transformer
VIT = "genvpt-tiny-vit"
CAPS = ["a small red star in the upper left on a blue background", "two medium green circles on a white background",
        "a large yellow ring at the top on a black background", "a small blue heart on the right on a striped red background"]


@pytest.fixture(scope="module")
def tiny() -> ClipModel:
    torch.manual_seed(0)
    return build_clip(TINY).eval()


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_encode_images_accepts_uint8_and_minus1_1_and_is_differentiable(tiny):
    imgs = _images(3)
    with torch.no_grad():
        a = tiny.encode_images(imgs)
        b = tiny.encode_images(imgs.float() / 127.5 - 1.0)
    assert a.shape == (3, tiny.embed_dim) and torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3), atol=1e-5)
    x = (imgs[:2, :, :, :].float() / 127.5 - 1.0).repeat_interleave(2, -1).repeat_interleave(2, -2).requires_grad_(True)
    feats = tiny.encode_images(x)  # 64 px input: resized in torch to the model's 32 px
    feats.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert tiny.model.visual.trunk.stem[0].weight.grad is not None  # this model is not frozen
    tiny.zero_grad(set_to_none=True)


def test_batched_inference_matches_and_zero_shot_runs(tiny):
    imgs = _images(5)
    with torch.no_grad():
        direct = tiny.encode_images(imgs)
    assert torch.allclose(tiny.embed_images(imgs, batch_size=2), direct, atol=1e-5)
    emb = tiny.class_embeddings(["star", "circle"], ["a photo of {class_name}", "{class_name}"])
    assert emb.shape == (2, tiny.embed_dim)
    acc = tiny.zero_shot_accuracy(imgs, torch.zeros(5, dtype=torch.long), ["star", "circle"], ["a {class_name}"])
    assert 0.0 <= acc <= 1.0
    with pytest.raises(TypeError):
        tiny.encode_texts("one string")


def test_a_training_step_lowers_the_clip_loss(tiny):
    import copy

    import open_clip

    clip = copy.deepcopy(tiny).train()
    imgs = _images(4)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(clip.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = loss_fn(*clip(imgs, CAPS))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def test_own_checkpoint_round_trip_and_wrong_name(tiny, tmp_path):
    path = save_clip(tmp_path / "model.pt", tiny)
    loaded = load_clip(ClipParams(model=TINY, pretrained=str(path), device="cpu"))
    imgs = _images(2)
    with torch.no_grad():
        assert torch.equal(loaded.encode_images(imgs), tiny.encode_images(imgs))
        assert torch.equal(loaded.encode_texts(CAPS), tiny.encode_texts(CAPS))
    assert not any(p.requires_grad for p in loaded.parameters())  # frozen for MVP / scoring
    with pytest.raises(ClipWeightsError, match=f"holds open_clip model '{TINY}'"):
        load_clip(ClipParams(model="ViT-B-32", pretrained=str(path)))


def test_vit_b32_state_dict_round_trip_gives_identical_embeddings(tmp_path):
    import open_clip

    torch.manual_seed(0)
    ref = ClipModel(open_clip.create_model("ViT-B-32"), open_clip.get_tokenizer("ViT-B-32"), "ViT-B-32", False).freeze()
    path = tmp_path / "vit-b-32.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in ref.model.state_dict().items()}}, path)  # a DDP-style file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit quick_gelu: no warning
        loaded = load_clip(ClipParams(model="ViT-B-32", pretrained=str(path), quick_gelu=False, device="cpu"))
    img = _images(1, size=48)  # resized to 224 inside; one image and one text: a ViT-B-32 forward is not free
    with torch.inference_mode():
        assert torch.equal(loaded.encode_images(img), ref.encode_images(img))
        assert torch.equal(loaded.encode_texts(CAPS[:1]), ref.encode_texts(CAPS[:1]))
    assert loaded.image_size == (224, 224) and loaded.embed_dim == 512


def test_quick_gelu_is_a_param_and_unset_warns(tmp_path):
    from open_clip.transformer import QuickGELU

    torch.manual_seed(0)
    vit = build_clip(VIT)  # a ViT: QuickGELU matters in both towers
    path = tmp_path / "plain.pt"
    torch.save(vit.model.state_dict(), path)  # a foreign open_clip file: nothing says which activation it needs
    with pytest.warns(QuickGeluWarning, match="quick_gelu"):
        gelu = load_clip(ClipParams(model=VIT, pretrained=str(path), device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quick = load_clip(ClipParams(model=VIT, pretrained=str(path), quick_gelu=True, device="cpu"))
    assert quick.quick_gelu and not gelu.quick_gelu
    assert any(isinstance(m, QuickGELU) for m in quick.modules()) and not any(isinstance(m, QuickGELU) for m in gelu.modules())
    imgs = _images(2)
    with torch.no_grad():  # same weights, different activation: the silent error the warning is about
        assert not torch.allclose(quick.encode_images(imgs), gelu.encode_images(imgs), atol=1e-4)
        assert not torch.allclose(quick.encode_texts(CAPS), gelu.encode_texts(CAPS), atol=1e-4)
    from genvpt.clip.model import _auto_quick_gelu

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the -quickgelu name settles it without a warning
        assert _auto_quick_gelu(ClipParams(model="ViT-B-32-quickgelu", pretrained=str(path)), path) is True


def test_missing_weights_errors_say_what_was_tried_and_how_to_fix(tmp_path):
    with pytest.raises(ClipWeightsError) as err:
        load_clip(ClipParams(pretrained=str(tmp_path / "data/clip/model.pt")))
    assert str(tmp_path / "data/clip/model.pt") in str(err.value) and "pretrain_clip" in str(err.value)
    with pytest.raises(ClipWeightsError) as err:
        load_clip(ClipParams(model="ViT-B-32", pretrained="/models/openai-vit-b-32.safetensors"))
    msg = str(err.value)
    assert "/models/openai-vit-b-32.safetensors" in msg and "ViT-B-32" in msg and "clip.pretrained" in msg


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated; OpenAI's files are TorchScript
def test_torchscript_file_is_refused_with_conversion_hint(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    assert is_torchscript_file(path)
    with pytest.raises(ClipWeightsError, match="convert-torchscript"):
        load_clip(ClipParams(model="ViT-B-32", pretrained=str(path)))


def test_mismatched_state_dict_lists_the_keys(tiny, tmp_path):
    sd = dict(tiny.model.state_dict())
    sd.pop("text_projection")
    sd["visual.proj"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatch) as err:
        load_clip(ClipParams(model=TINY, pretrained=str(path), quick_gelu=False))
    assert "text_projection" in str(err.value) and "visual.proj" in str(err.value)


def test_clip_params_validation():
    from genvpt.config import ConfigError, validate_params

    with pytest.raises(ConfigError, match="clip.precision"):
        validate_params({"clip": {"precision": "fp8"}})
    with pytest.raises(ConfigError, match="class_name"):
        validate_params({"clip": {"train": {"templates": ["a photo"]}}})
    assert ClipTrainParams().steps > 0


# ---- the pretrain_clip loop -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    from _shapes_prepared import make_prepared

    root = tmp_path_factory.mktemp("clipdata")
    return make_prepared(root / "source", domain="flat", seed=1), make_prepared(root / "target", domain="textured")


def _train_params(**kw) -> ClipParams:
    t = dict(steps=4, batch_size=6, warmup_steps=1, checkpoint_every=2, eval_batch_size=8)
    t.update(kw)
    return ClipParams(device="cpu", train=ClipTrainParams(**t))


def test_pretrain_clip_writes_outputs_and_resumes_exactly(domains, tmp_path, monkeypatch):
    import json

    from genvpt.clip import pretrain as clip_pretrain
    from genvpt.training import TrainCheckpoint

    source, target = domains
    ref_dir = tmp_path / "ref"
    metrics = clip_pretrain.pretrain_clip(source, ref_dir, _train_params(), target_dir=target)
    assert {"model.pt", "metrics.json", "loss.csv"} <= {p.name for p in ref_dir.iterdir()}
    assert not (ref_dir / "train_state.pt").exists()  # removed after a finished run
    saved = json.loads((ref_dir / "metrics.json").read_text())
    assert set(saved["zero_shot_accuracy"]) == {"source_val", "target_val"} and saved["steps"] == 4
    assert metrics["template"] == "a photo of {class_name}"

    out = tmp_path / "run"
    real = clip_pretrain.add_textures
    calls = {"n": 0}

    def crash_at_step_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(clip_pretrain, "add_textures", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        clip_pretrain.pretrain_clip(source, out, _train_params(), target_dir=target)
    assert (out / "train_state.pt").exists() and not (out / "model.pt").exists()
    monkeypatch.setattr(clip_pretrain, "add_textures", real)
    resumed_from = []
    orig_resume = TrainCheckpoint.resume
    monkeypatch.setattr(TrainCheckpoint, "resume", lambda self, *a: resumed_from.append(orig_resume(self, *a)) or resumed_from[-1])
    clip_pretrain.pretrain_clip(source, out, _train_params(), target_dir=target)
    assert resumed_from == [2]
    a = load_clip(ClipParams(pretrained=str(ref_dir / "model.pt")))
    b = load_clip(ClipParams(pretrained=str(out / "model.pt")))
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_texture_augmentation_repaints_plain_backgrounds_and_captions(domains):
    from genvpt.clip.pretrain import TEXTURE_WORDS, add_textures
    from genvpt.datasets.shards import load_split

    split = load_split(domains[0], "train")
    g = torch.Generator().manual_seed(0)
    out, caps = add_textures(split.images, split.captions, 1.0, g)
    changed = [i for i in range(len(caps)) if caps[i] != split.captions[i]]
    assert changed and all(any(f" on a {w} " in caps[i] for w in TEXTURE_WORDS) for i in changed)
    assert all(not torch.equal(out[i], split.images[i]) for i in changed)
    same, _ = add_textures(split.images, split.captions, 0.0, g)
    assert torch.equal(same, split.images)


def test_a_real_clip_model_is_imported_and_evaluated_not_trained(domains, tiny, tmp_path):
    import json

    import open_clip

    from genvpt.clip.pretrain import pretrain_clip

    cfg = json.loads((Path(__file__).resolve().parents[1] / f"genvpt/clip/configs/{TINY}.json").read_text())
    cfg["quick_gelu"] = True  # like ViT-B-32-quickgelu
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "foreign-tiny-quickgelu.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfg")
    weights = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(weights))
    params = ClipParams(model="foreign-tiny-quickgelu", pretrained=str(weights), device="cpu")
    metrics = pretrain_clip(domains[0], tmp_path / "out", params, target_dir=domains[1])
    assert metrics["mode"] == "imported" and metrics["quick_gelu"] is True and "steps" not in metrics
    again = load_clip(params.model_copy(update={"pretrained": str(tmp_path / "out" / "model.pt")}))
    ref = load_clip(params)
    imgs = _images(2)
    with torch.no_grad():
        assert torch.equal(again.encode_images(imgs), ref.encode_images(imgs))


def test_flips_mirror_the_caption_positions_and_shifts_move_pixels():
    from genvpt.clip.pretrain import flip_and_shift

    img = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    img[:, :, 1, 1] = 255  # a dot in the upper left
    caps = ["a small red dot in the upper left on a blue background"] * 64
    out, new = flip_and_shift(img, caps, torch.Generator().manual_seed(0), flip=True, max_shift=0)
    for o, c in zip(out, new):
        y, x = (o[0] == 255).nonzero()[0].tolist()
        where = ("upper" if y < 4 else "lower") + " " + ("left" if x < 4 else "right")
        assert f"in the {where} on" in c
    assert len(set(new)) == 4  # all four mirror combinations occur
    shifted, same = flip_and_shift(img[:16], caps[:16], torch.Generator().manual_seed(1), flip=False, max_shift=1)
    assert same == caps[:16]
    pos = {tuple((o[0] == 255).nonzero()[0].tolist()) for o in shifted}
    assert pos <= {(y, x) for y in (0, 1, 2) for x in (0, 1, 2)} and len(pos) > 1
