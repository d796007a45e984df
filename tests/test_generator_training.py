"""Training loops (loss falls, resume reproduces an uninterrupted run), checkpoint loading and the Backbone."""
import math

import pytest
import torch

from genvpt.checkpoint import CheckpointError, CheckpointMismatch
from genvpt.generators import Backbone, load_generator, load_pretrained, save_generator
from genvpt.generators.params import GeneratorParams
from genvpt.generators.train import _FamilyData, build_model, train_generator
from genvpt.tokenizers import VQGAN, MSVQConfig, MultiScaleVQVAE, VQGANConfig
from genvpt.tokenizers.token_shards import TokenData

pytestmark = pytest.mark.usefixtures("one_thread")



V = 32


def tiny_vqgan():
    torch.manual_seed(0)
    return VQGAN(VQGANConfig(resolution=32, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=8,
                             n_embed=V, embed_dim=4, norm_groups=4)).eval()


def tiny_msvq():
    torch.manual_seed(0)
    return MultiScaleVQVAE(MSVQConfig(vocab_size=V, z_channels=4, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1,
                                      patch_nums=(1, 2, 4, 8), using_sa=False, using_mid_sa=False, norm_groups=4)).eval()


def class_tokens(grid, n=96, classes=3, seed=0):
    """Tokens determined by the class (a fixed random map per class) with 10% of positions noised (``seed``)."""
    g = torch.Generator().manual_seed(1234)
    protos = [[torch.randint(0, V, (classes, s * s), generator=g)] for s in grid]
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    scales = []
    for (p,) in protos:
        t = p[labels].clone()
        noise = torch.rand(t.shape, generator=g) < 0.1
        t[noise] = torch.randint(0, V, (int(noise.sum()),), generator=g)
        scales.append(t)
    return TokenData(scales=scales, labels=labels, keys=[f"k{i}" for i in range(n)], captions=[None] * n,
                     class_names=["a", "b", "c"][:classes], grid=list(grid))


def tiny_params(steps=40, **train):
    tr = dict(steps=steps, batch_size=16, lr=1e-2, warmup_steps=2, log_every=5, eval_every=20, checkpoint_every=10)
    tr.update(train)
    return GeneratorParams.model_validate({
        "device": "cpu",
        "ar": {"n_layer": 2, "n_head": 2, "n_embd": 32, "order": "z_curve", "train": tr},
        "maskgit": {"hidden_dim": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "dropout": 0.0, "train": tr},
        "var": {"depth": 2, "embed_dim": 32, "num_heads": 2, "init_adaln_gamma": 0.5, "train": tr},
    })


@pytest.mark.parametrize("family", ["ar", "maskgit", "var"])
def test_training_lowers_the_loss(family):
    tok = tiny_msvq() if family == "var" else tiny_vqgan()
    grid = (1, 2, 4, 8) if family == "var" else (8,)
    res = train_generator(family, tiny_params(), tokens=class_tokens(grid), val_tokens=class_tokens(grid, n=24, seed=1),
                          tokenizer=tok, seed=0, progress=False)
    losses = [r["loss"] for r in res.history]
    assert losses[0] > 0.8 * math.log(V)
    assert losses[-1] < 0.6 * losses[0], losses
    assert res.history[-1]["val_loss"] != "" and res.summary["final_val_loss"] < losses[0]
    assert set(res.history[0]) == {"step", "loss", "lr", "val_loss"}


def test_resume_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    gp = tiny_params(steps=20)
    data, tok = class_tokens((8,)), tiny_vqgan()
    full = train_generator("ar", gp, tokens=data, tokenizer=tok, seed=3, progress=False,
                           state_path=tmp_path / "a" / "state.pt")
    calls = {"n": 0}
    orig = _FamilyData.loss

    def crash_at_15(self, idx, **kw):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt("simulated crash")
        return orig(self, idx, **kw)

    monkeypatch.setattr(_FamilyData, "loss", crash_at_15)
    state = tmp_path / "b" / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_generator("ar", gp, tokens=data, tokenizer=tok, seed=3, progress=False, state_path=state)
    assert state.exists()  # saved at step 10
    monkeypatch.setattr(_FamilyData, "loss", orig)
    resumed = train_generator("ar", gp, tokens=data, tokenizer=tok, seed=3, progress=False, state_path=state)
    assert resumed.summary["resumed_from_step"] == 10
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    # the finished state is kept: a rerun with the same params trains nothing and returns the same weights
    monkeypatch.setattr(_FamilyData, "loss", crash_at_15)  # any training step would now raise
    calls["n"] = 14
    again = train_generator("ar", gp, tokens=data, tokenizer=tok, seed=3, progress=False, state_path=state)
    assert again.summary["resumed_from_step"] == 20 and again.summary["train_seconds"] > 0
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), again.model.state_dict().values()))
    assert [r["loss"] for r in again.history] == [r["loss"] for r in full.history]
    monkeypatch.setattr(_FamilyData, "loss", orig)
    # a state from other params is not resumed
    other = train_generator("ar", tiny_params(steps=20, lr=1e-3), tokens=data, tokenizer=tok, seed=3, progress=False,
                            state_path=state)
    assert other.summary["resumed_from_step"] == 0


# ------------------------------------------------------------------------------------------------ loading
def _var(**kw):
    gp = tiny_params()
    torch.manual_seed(0)
    return build_model("var", gp, vocab_size=V, grid=[1, 2, 4, 8], num_classes=3, Cvae=4, **kw).eval()


def test_official_var_containers_load_strictly(tmp_path):
    m = _var()
    x, lab = torch.randn(2, m.L - 1, 4), torch.tensor([0, 1])
    plain, nested = tmp_path / "var_d2.pth", tmp_path / "ar-ckpt-last.pth"
    torch.save(m.state_dict(), plain)
    torch.save({"trainer": {"var_wo_ddp": m.state_dict(), "step": 3}, "epoch": 1}, nested)
    for p in (plain, nested):
        loaded = load_pretrained("var", p, depth=2)
        assert loaded.cfg.C == 32 and loaded.cfg.patch_nums == (1, 2, 4, 8)
        assert torch.allclose(loaded(lab, x), m(lab, x))
    assert load_generator(nested).family == "var"


def test_wrong_family_or_size_fails_clearly(tmp_path):
    m = _var()
    path = tmp_path / "var.pth"
    torch.save(m.state_dict(), path)
    with pytest.raises(CheckpointError, match="holds a 'var' generator checkpoint, but a 'maskgit'"):
        load_pretrained("maskgit", path)
    with pytest.raises(CheckpointError, match=r"another size \(depth=2\) than asked for \(depth=16\)"):
        load_pretrained("var", path, depth=16)
    sd = m.state_dict()
    del sd["blocks.1.ffn.fc2.bias"]
    sd["blocks.0.attn.q_bias"] = torch.zeros(7)
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatch) as err:
        load_pretrained("var", path)
    msg = str(err.value)
    assert "blocks.1.ffn.fc2.bias" in msg and "blocks.0.attn.q_bias: (7,) vs (32,)" in msg


def test_valeoai_maskgit_container_loads(tmp_path):
    gp = tiny_params()
    torch.manual_seed(0)
    m = build_model("maskgit", gp, vocab_size=V, grid=[8], num_classes=3).eval()
    path = tmp_path / "MaskGIT_ImageNet_256.pth"
    torch.save({"iter": 7, "global_epoch": 1, "model_state_dict": m.state_dict(), "optimizer_state_dict": {}}, path)
    loaded = load_pretrained("maskgit", path, heads=2, vocab_size=V)
    assert loaded.cfg.num_classes == 3 and loaded.cfg.grid == 8
    tok = torch.randint(0, V, (2, 8, 8))
    assert torch.allclose(loaded(tok, torch.tensor([0, 2])), m(tok, torch.tensor([0, 2])), atol=1e-6)


def test_own_files_roundtrip_and_refuse_other_family(tmp_path):
    gp = tiny_params()
    m = build_model("ar", gp, vocab_size=V, grid=[8], num_classes=3)
    save_generator(tmp_path / "model.pt", m, class_names=["a", "b", "c"])
    back = load_generator(tmp_path / "model.pt")
    assert back.cfg == m.cfg and back.meta["class_names"] == ["a", "b", "c"]
    with pytest.raises(CheckpointError, match="holds a 'ar' generator, but a 'var' generator was asked for"):
        load_generator(tmp_path / "model.pt", family="var")


def test_backbone_samples_uint8_images_deterministically():
    gp = tiny_params()
    torch.manual_seed(0)
    ar = Backbone("ar", build_model("ar", gp, vocab_size=V, grid=[8], num_classes=3), tiny_vqgan(), {"top_k": 10})
    var = Backbone("var", _var(), tiny_msvq(), {"cfg": 1.5, "top_k": 5})
    mg = Backbone("maskgit", build_model("maskgit", gp, vocab_size=V, grid=[8], num_classes=3), tiny_vqgan(), {"steps": 3})
    labels = torch.tensor([0, 1, 2, 0, 1])
    for bb in (ar, var, mg):
        a = bb.sample_images(labels, seed=1, batch_size=2)
        b = bb.sample_images(labels, seed=1, batch_size=2)
        assert a.dtype == torch.uint8 and a.shape == (5, 3, 32, 32)
        assert torch.equal(a, b)
        assert not torch.equal(a, bb.sample_images(labels, seed=2, batch_size=2))
    with pytest.raises(CheckpointError, match="predicts 32 codes but the tokenizer has 16"):
        small = VQGAN(VQGANConfig(ch=8, ch_mult=(1, 2, 2), attn_resolutions=(), z_channels=8, n_embed=16, embed_dim=4, norm_groups=4))
        Backbone("ar", ar.generator, small)
