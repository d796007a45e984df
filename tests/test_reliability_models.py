"""Reliability on the model side: checkpoints that do not fit the model, NaN / inf during training, a full disk
while writing, and params with typos or wrongly-typed values. Every model here is tiny (milliseconds a step)."""
from __future__ import annotations

import copy
import errno
import logging
import os
from pathlib import Path

import pytest
import torch
import yaml

from genvpt.checkpoint import CheckpointError, CheckpointMismatch, NonFiniteWeights, save_model
from genvpt.generators import load_generator, save_generator
from genvpt.tokenizers import load_tokenizer, save_tokenizer
from genvpt.training import NonFiniteLoss, TrainCheckpoint, check_finite

from _adapt_tiny import tiny_backbone, tiny_data, tiny_generator, tiny_msvq, tiny_vqgan

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _own_file(path: Path, model, family: str, state: dict) -> Path:
    cfg = model.cfg.to_dict() if hasattr(model, "cfg") else model.config.to_dict()
    torch.save({"family": family, "config": cfg, "state_dict": state, "meta": {}}, path)
    return path


# ---- 3. checkpoints that do not fit ------------------------------------------------------------------------------
@pytest.mark.parametrize("family,key", [("ar", "head.weight"), ("ar", "pos_emb"), ("var", "class_emb.weight"),
                                        ("var", "head.weight"), ("maskgit", "pos_emb")])
def test_official_state_dict_without_a_size_key_lists_it(tmp_path, family, key):
    """Before: a bare KeyError('head.weight') from the size inference."""
    sd = dict(tiny_generator(family).state_dict())
    sd.pop(key)
    sd["bogus.weight"] = torch.zeros(1)
    p = tmp_path / "official.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointMismatch) as info:
        load_generator(p, n_head=2, heads=2, vocab_size=16)
    assert key in info.value.missing and str(p) in str(info.value) and key in str(info.value)


def test_official_state_dict_with_wrong_keys_lists_missing_and_unexpected(tmp_path):
    sd = dict(tiny_generator("var").state_dict())
    sd["blocks.0.ffn.fc9.weight"] = sd.pop("blocks.0.ffn.fc2.weight")
    p = tmp_path / "var.pth"
    torch.save({"trainer": {"var_wo_ddp": sd}}, p)
    with pytest.raises(CheckpointMismatch) as info:
        load_generator(p)
    msg = str(info.value)
    assert "blocks.0.ffn.fc2.weight" in msg and "blocks.0.ffn.fc9.weight" in msg and "missing" in msg and "unexpected" in msg


def test_own_generator_file_with_wrong_keys_lists_them(tmp_path):
    g = tiny_generator("ar")
    sd = {k.replace("blocks.1.", "layers.1."): v for k, v in g.state_dict().items()}
    p = _own_file(tmp_path / "ar.pt", g, "ar", sd)
    with pytest.raises(CheckpointMismatch) as info:
        load_generator(p)
    assert "blocks.1.attn.key.weight" in info.value.missing and "layers.1.attn.key.weight" in info.value.unexpected


def test_generator_of_the_wrong_size_lists_mis_shaped_keys(tmp_path):
    from genvpt.generators import GPT, ARConfig

    small = tiny_generator("ar")
    big = GPT(ARConfig(vocab_size=16, grid=4, num_classes=3, n_layer=2, n_head=2, n_embd=64))
    p = _own_file(tmp_path / "ar.pt", small, "ar", big.state_dict())
    with pytest.raises(CheckpointMismatch) as info:
        load_generator(p)
    shaped = {k: (a, b) for k, a, b in info.value.mis_shaped}
    assert shaped["tok_emb.weight"] == ((20, 64), (20, 32)) and "blocks.1.ln1.bias: (64,) vs (32,)" in str(info.value)


def test_checkpoints_of_the_wrong_family_name_both(tmp_path):
    save_tokenizer(tmp_path / "tok.pt", tiny_vqgan())
    with pytest.raises(CheckpointError, match="holds a 'vqgan' model, not a generator"):
        load_generator(tmp_path / "tok.pt")
    torch.save(tiny_vqgan().state_dict(), tmp_path / "tok_plain.pt")
    with pytest.raises(CheckpointError, match="neither a genvpt generator file"):
        load_generator(tmp_path / "tok_plain.pt")
    save_generator(tmp_path / "gen.pt", tiny_generator("var"))
    with pytest.raises(CheckpointError, match="holds a 'var' model, not a tokenizer"):
        load_tokenizer(tmp_path / "gen.pt")
    with pytest.raises(CheckpointError, match="holds a 'var' generator, but a 'ar' generator was asked for"):
        load_generator(tmp_path / "gen.pt", family="ar")


@pytest.mark.parametrize("family", ["ar", "var"])
def test_float16_weights_are_cast_with_a_note(tmp_path, family, caplog):
    g = tiny_generator(family)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in g.state_dict().items()}
    p = _own_file(tmp_path / "g.pt", g, family, half)
    with caplog.at_level(logging.INFO, logger="genvpt.checkpoint"):
        m = load_generator(p)
    assert all(v.dtype == torch.float32 for v in m.state_dict().values() if v.is_floating_point())
    assert torch.equal(m.state_dict()["head.weight"], half["head.weight"].float())
    assert any("casting" in r.getMessage() and "float16 -> float32" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("family", ["ar", "maskgit", "var"])
def test_integer_tensors_for_float_weights_are_refused(tmp_path, family):
    """Before: load_state_dict silently turned int64 into float weights."""
    g = tiny_generator(family)
    sd = dict(g.state_dict())
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.dim() == 2)
    sd[key] = sd[key].round().long()
    p = _own_file(tmp_path / "g.pt", g, family, sd)
    with pytest.raises(CheckpointMismatch) as info:
        load_generator(p)
    assert [k for k, *_ in info.value.mis_typed] == [key]
    assert f"{key}: int64 vs float32" in str(info.value) and "mis-typed" in str(info.value)


def test_official_file_with_integer_weights_is_refused(tmp_path):
    sd = {k: (v.long() if v.is_floating_point() else v) for k, v in tiny_generator("var").state_dict().items()}
    torch.save(sd, tmp_path / "var.pth")
    with pytest.raises(CheckpointMismatch, match="mis-typed"):
        load_generator(tmp_path / "var.pth")


@pytest.mark.parametrize("make,family", [(tiny_vqgan, "vqgan"), (tiny_msvq, "msvq")])
def test_tokenizer_loader_checks_dtypes(tmp_path, make, family, caplog):
    tok = make()
    sd = dict(tok.state_dict())
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    with caplog.at_level(logging.INFO, logger="genvpt.checkpoint"):
        back = load_tokenizer(_own_file(tmp_path / "half.pt", tok, family, half))
    assert all(v.dtype == torch.float32 for v in back.state_dict().values() if v.is_floating_point())
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.dim() == 4)
    sd[key] = sd[key].to(torch.int32)
    with pytest.raises(CheckpointMismatch) as info:
        load_tokenizer(_own_file(tmp_path / "int.pt", tok, family, sd))
    assert f"{key}: int32 vs float32" in str(info.value)


def test_clip_loader_checks_dtypes(tmp_path):
    from genvpt.clip import build_clip, load_clip, save_clip
    from genvpt.clip.params import ClipParams

    torch.manual_seed(0)
    clip = build_clip("genvpt-tiny-cnn").eval()
    path = save_clip(tmp_path / "model.pt", clip)
    obj = torch.load(path, weights_only=True)
    key = "text_projection"
    obj["state_dict"][key] = obj["state_dict"][key].to(torch.int16)
    torch.save(obj, tmp_path / "int.pt")
    with pytest.raises(CheckpointMismatch) as info:
        load_clip(ClipParams(model="genvpt-tiny-cnn", pretrained=str(tmp_path / "int.pt"), device="cpu"))
    assert f"{key}: int16 vs float32" in str(info.value)
    obj["state_dict"] = {k: (v.half() if v.is_floating_point() else v) for k, v in clip.model.state_dict().items()}
    torch.save(obj, tmp_path / "half.pt")
    back = load_clip(ClipParams(model="genvpt-tiny-cnn", pretrained=str(tmp_path / "half.pt"), device="cpu"))
    assert back.model.text_projection.dtype == torch.float32


# ---- 4. NaN / inf during training --------------------------------------------------------------------------------
def test_check_finite_names_step_and_where(tmp_path):
    check_finite(torch.tensor(1.5), 3, "x")
    with pytest.raises(NonFiniteLoss, match=r"stage y: the training loss is nan at step 7") as info:
        check_finite(torch.tensor(float("nan")), 7, "stage y")
    assert info.value.step == 7 and info.value.where == "stage y"
    with pytest.raises(NonFiniteLoss, match="inf at step 2"):
        check_finite(float("inf"), 2, "z")


def test_train_checkpoint_refuses_nonfinite_weights_and_keeps_the_old_state(tmp_path):
    m = torch.nn.Linear(2, 2)
    ck = TrainCheckpoint(tmp_path / "train_state.pt", every=1)
    ck.save(1, m)
    before = ck.path.read_bytes()
    with torch.no_grad():
        m.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeights, match="weight"):
        ck.save(2, m)
    assert ck.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.pt"]


def test_save_model_refuses_nonfinite_weights_but_allows_inf_mask_buffers(tmp_path):
    var = tiny_generator("var")  # attn_bias_for_masking holds -inf by design
    save_generator(tmp_path / "var.pt", var)
    with torch.no_grad():
        var.head.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeights, match="head.weight"):
        save_generator(tmp_path / "bad.pt", var)
    assert not (tmp_path / "bad.pt").exists()
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.bias[0] = float("nan")
    with pytest.raises(NonFiniteWeights):
        save_model(tmp_path / "lin.pt", lin, "x", {})
    assert not (tmp_path / "lin.pt").exists()


def _nan_at(step: int, fn, on_nan=None, count_if=lambda *a, **k: True):
    """Wrap ``fn``: its ``step``-th counted call returns NaN (after calling ``on_nan``)."""
    calls = {"n": 0}

    def wrapped(*a, **k):
        out = fn(*a, **k)
        if count_if(*a, **k):
            calls["n"] += 1
            if calls["n"] == step:
                if on_nan:
                    on_nan()
                return out * float("nan") if torch.is_tensor(out) else (out[0] * float("nan"), *out[1:])
        return out

    return wrapped


def test_generator_stage_stops_on_nan_keeps_the_state_and_writes_no_model(tmp_path, monkeypatch):
    from genvpt.config import load_params
    from genvpt.generators import pretrain as gen_pretrain
    from genvpt.generators import train as gen_train
    from test_generator_stage import _params, _write_tokens

    from test_generator_training import tiny_vqgan as tiny_vqgan32  # the stage's tokens are 32x32 images

    vq = tiny_vqgan32()
    save_tokenizer(tmp_path / "tok.pt", vq)
    _write_tokens(tmp_path / "tokens", vq, "vqgan")
    gp = load_params(_params(tmp_path)).generator  # 6 steps, a training state every 3
    out = tmp_path / "gen"
    state = out / "train_state.pt"
    seen = {}
    monkeypatch.setattr(gen_train._FamilyData, "loss", _nan_at(
        5, gen_train._FamilyData.loss, on_nan=lambda: seen.setdefault("state", state.read_bytes()),
        count_if=lambda self, idx, train, **k: train))
    with pytest.raises(NonFiniteLoss) as info:
        gen_pretrain.pretrain_family("ar", gp, tokens_dir=tmp_path / "tokens", tokenizer_path=tmp_path / "tok.pt",
                                     out_dir=out, seed=0)
    assert info.value.step == 5 and "at step 5" in str(info.value) and "generator ar" in str(info.value)
    assert str(state) in str(info.value)
    assert state.read_bytes() == seen["state"]  # the state of step 3, untouched
    assert torch.load(state, weights_only=True)["step"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["train_state.pt"]  # no model.pt, metrics.json, loss.csv


def _adapt_cfg(backbone: str, method: str, **train):
    from genvpt.adaptation.params import AdaptationParams
    from genvpt.backbones import BACKBONES

    tr = {"steps": 6, "batch_size": 8, "checkpoint_every": 2, "warmup_steps": 0, **train}
    p = AdaptationParams(configs={"x": {"backbone": backbone, "tokenizer": BACKBONES[backbone].tokenizer_family,
                                        "method": method, "train": tr}})
    return p.config("x")


@pytest.mark.parametrize("bb,method", [("ar", "vpt"), ("var", "lora")])
def test_adaptation_stops_on_nan_keeps_the_state_and_writes_no_model(tmp_path, bb, method):
    from genvpt.adaptation.train import train_adaptation

    b = tiny_backbone(bb)
    state = tmp_path / "train_state.pt"
    seen = {}
    b.loss = _nan_at(5, b.loss, on_nan=lambda: seen.setdefault("state", state.read_bytes()))
    with pytest.raises(NonFiniteLoss) as info:
        train_adaptation(_adapt_cfg(bb, method), backbone=b, data=tiny_data(bb), out_dir=tmp_path, progress=False)
    assert info.value.step == 5 and "adaptation x seed 0" in str(info.value) and str(tmp_path) in str(info.value)
    assert state.read_bytes() == seen["state"] and torch.load(state, weights_only=True)["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.pt"]  # no model.pt, record.json, curve.csv


def test_tokenizer_training_stops_on_nan(tmp_path, monkeypatch):
    from genvpt.tokenizers import train as tok_train
    from genvpt.tokenizers.params import TokenizerTrainParams

    model = tiny_vqgan()
    tp = TokenizerTrainParams(steps=5, batch_size=4, warmup_steps=0, ae_warmup_steps=0, codebook_init="random",
                              restart_every=0, checkpoint_every=2)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    state = tmp_path / "train_state.pt"
    seen = {}
    monkeypatch.setattr(tok_train, "_recon_loss", _nan_at(
        4, tok_train._recon_loss, on_nan=lambda: seen.setdefault("state", state.read_bytes())))
    with pytest.raises(NonFiniteLoss, match="tokenizer vqgan training: the training loss is nan at step 4"):
        tok_train.train_tokenizer(model, images, tp, seed=0, state_path=state, fingerprint="f", progress=False)
    assert state.read_bytes() == seen["state"] and torch.load(state, weights_only=True)["step"] == 2


def test_classifier_training_stops_on_nan(tmp_path, monkeypatch):
    from genvpt.classify import train as cls_train
    from test_classify_methods import PARAMS, quadrants, tiny_clip

    state = tmp_path / "train_state.pt"
    seen = {}
    monkeypatch.setattr(cls_train.F, "cross_entropy", _nan_at(
        7, torch.nn.functional.cross_entropy, on_nan=lambda: seen.setdefault("state", state.read_bytes())))
    with pytest.raises(NonFiniteLoss, match="classifier vp seed 0 .* at step 7"):
        cls_train.train_classifier(PARAMS.config("vp"), clip=tiny_clip(), train_data=quadrants(16, 1),
                                   out_dir=tmp_path, seed=0)
    assert state.read_bytes() == seen["state"] and torch.load(state, weights_only=True)["step"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.pt"]


# ---- 5. a full disk while writing (genvpt.io) ----------------------------------------------------------------
def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _siblings(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_atomic_path_full_disk_mid_write_keeps_the_old_file(tmp_path):
    from genvpt.io import atomic_path

    f = tmp_path / "model.pt"
    f.write_bytes(b"good")
    with pytest.raises(OSError) as info:
        with atomic_path(f) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"half a")
                _enospc()
    assert info.value.errno == errno.ENOSPC
    assert f.read_bytes() == b"good" and _siblings(tmp_path) == ["model.pt"]


@pytest.mark.parametrize("where", ["os.fsync", "os.replace"])
def test_atomic_path_full_disk_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch, where):
    from genvpt import io as gio

    f = tmp_path / "metrics.json"
    gio.write_json(f, {"good": 1})
    before = f.read_bytes()
    monkeypatch.setattr(gio.os, where.split(".")[1], _enospc)
    with pytest.raises(OSError):
        gio.write_json(f, {"new": 2})
    monkeypatch.undo()
    assert f.read_bytes() == before and _siblings(tmp_path) == ["metrics.json"]


def test_write_json_full_disk_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    from genvpt import io as gio

    f = tmp_path / "record.json"
    gio.write_json(f, {"good": 1})
    before = f.read_bytes()

    def half_then_full(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        _enospc()

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(OSError):
        gio.write_json(f, {"new": "x" * 1000})
    monkeypatch.undo()
    assert f.read_bytes() == before and _siblings(tmp_path) == ["record.json"]


def test_atomic_dir_full_disk_mid_write_keeps_the_old_dir(tmp_path):
    from genvpt.io import atomic_dir

    d = tmp_path / "shards"
    d.mkdir()
    (d / "a.bin").write_bytes(b"good")
    with pytest.raises(OSError):
        with atomic_dir(d) as tmp:
            (tmp / "a.bin").write_bytes(b"new")
            _enospc()
    assert _siblings(tmp_path) == ["shards"] and _siblings(d) == ["a.bin"] and (d / "a.bin").read_bytes() == b"good"


def test_atomic_dir_full_disk_at_the_final_rename_keeps_the_old_dir(tmp_path, monkeypatch):
    from genvpt import io as gio

    d = tmp_path / "shards"
    d.mkdir()
    (d / "a.bin").write_bytes(b"good")
    real = os.replace

    def replace(src, dst):
        if Path(dst) == d and ".tmp-" in Path(src).name:  # the new dir onto the final name: no room for it
            _enospc()
        return real(src, dst)

    monkeypatch.setattr(gio.os, "replace", replace)
    with pytest.raises(OSError):
        with gio.atomic_dir(d) as tmp:
            (tmp / "a.bin").write_bytes(b"new")
    monkeypatch.undo()
    assert d.is_dir() and (d / "a.bin").read_bytes() == b"good"
    assert _siblings(tmp_path) == ["shards"]


# ---- 7. params: an unknown key and a wrongly-typed value in every block ------------------------------------------
PARAMS_YAML = yaml.safe_load((ROOT / "params.yaml").read_text())
BLOCKS = [k for k, v in PARAMS_YAML.items() if isinstance(v, dict)]
WRONG = {"not": "a value"}  # a mapping where a scalar or list is expected: wrong for every leaf


def _leaves(d: dict, prefix: tuple) -> list[tuple]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _leaves(v, prefix + (k,))
        elif not isinstance(v, dict):
            out.append(prefix + (k,))
    return out


# mappings of names (a new name is a new entry, not an unknown key): each entry is checked, not the map itself
NAME_MAPS = {("classify", "datasets"), ("tokenizer", "data"), ("extra_targets",)}


def _mappings(d: dict, prefix: tuple) -> list[tuple]:
    names = prefix in NAME_MAPS
    out = [] if names else [prefix]
    for k, v in d.items():
        if names:
            if isinstance(v, dict) and v:
                out += _mappings(v, prefix + (k,))
        elif isinstance(v, dict) and v and not (prefix in {("adaptation",), ("classify",)} and k == "configs"):  # names
            out += _mappings(v, prefix + (k,))
    return out


def _error(data: dict, tmp_path: Path) -> str:
    """The ConfigError of ``data`` written as a params file and read with genvpt.config.load_params."""
    from genvpt.config import ConfigError, load_params

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_params(path)
    return str(info.value)


def test_every_block_of_params_yaml_is_covered():
    assert set(BLOCKS) >= {"dataset", "source", "prepare", "prefect", "sample", "metrics", "report", "adaptation",
                           "caption", "clip", "tokenizer", "generator"}


@pytest.mark.parametrize("block", BLOCKS)
def test_unknown_key_anywhere_in_a_block_names_the_full_key_and_what_is_allowed(block, tmp_path):
    for where in _mappings(PARAMS_YAML[block], (block,)):
        data = copy.deepcopy(PARAMS_YAML)
        node = data
        for k in where:
            node = node[k]
        node["tpyo_key"] = 1
        key = ".".join(map(str, where + ("tpyo_key",)))
        msg = _error(data, tmp_path)
        line = next((ln for ln in msg.splitlines() if key + ":" in ln), None)
        assert line is not None, f"{key} not named in:\n{msg[:600]}"
        assert "unknown key" in line and "allowed" in line, line
        assert "{'" not in line, f"the error dumps the whole block instead of naming the key:\n{line[:300]}"


@pytest.mark.parametrize("block", BLOCKS)
def test_wrongly_typed_value_anywhere_in_a_block_names_the_full_key(block):
    from genvpt.config import ConfigError, validate_params

    for leaf in _leaves(PARAMS_YAML[block], (block,)):
        data = copy.deepcopy(PARAMS_YAML)
        node = data
        for k in leaf[:-1]:
            node = node[k]
        node[leaf[-1]] = WRONG
        key = ".".join(map(str, leaf))
        try:  # validate_params: the same validation as load_params without a file per leaf
            validate_params(data, "params.yaml")
        except ConfigError as err:
            line = next((ln for ln in str(err).splitlines() if ln.strip().startswith(key + ":")), None)
            assert line is not None, f"{key} not named in:\n{str(err)[:600]}"
            assert len(line) < 600, f"the error dumps the whole block:\n{line[:300]}"
        else:
            pytest.fail(f"{key} = {WRONG!r} was accepted")


def test_a_block_of_the_wrong_type_names_it(tmp_path):
    data = copy.deepcopy(PARAMS_YAML)
    data["adaptation"]["configs"]["mvp"]["backbone"] = ["var"]
    data["generator"]["ar"] = 3
    msg = _error(data, tmp_path)
    assert "adaptation.configs.mvp.backbone: unknown backbone ['var']; registered: ar, maskgit, var" in msg
    assert "generator.ar:" in msg
