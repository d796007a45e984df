"""Tokenizers: official layouts (parity with the reference sheets), strict loading, VAR semantics, training, resume.

Official-size models are built on the meta device (no memory for their ~100 M parameters); everything that runs
uses tiny configs.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from genvpt.checkpoint import CheckpointError, CheckpointMismatch
from genvpt.tokenizers import (
    MSVQConfig,
    MultiScaleVQVAE,
    VQGAN,
    VQGANConfig,
    decode_tokens,
    encode_tokens,
    load_pretrained_msvq,
    load_pretrained_vqgan,
    load_tokenizer,
    save_tokenizer,
)
from genvpt.tokenizers.params import MSVQParams, TokenizerParams, TokenizerTrainParams, VQGANParams
from genvpt.tokenizers.train import model_config, train_tokenizer, zero_init_residuals

TINY_VQGAN = VQGANConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=8,
                         n_embed=16, embed_dim=4, norm_groups=32)  # 32 as the official files (not stored)
TINY_MSVQ = MSVQConfig(vocab_size=16, z_channels=4, ch=8, ch_mult=(1, 2), num_res_blocks=1, patch_nums=(1, 2, 4, 8),
                       norm_groups=32)


def _images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------------------------
# Parity with the reference sheets (shared/reference/var.md, maskgit-taming-vptgen.md)
# ---------------------------------------------------------------------------------------------------------------
# var.md §1: examples of vae_ch160v4096z32.pth keys and shapes
VAR_VAE_EXAMPLES = {
    "encoder.conv_in.weight": (160, 3, 3, 3),
    "encoder.down.4.attn.0.qkv.weight": (1920, 640, 1, 1),
    "encoder.conv_out.weight": (32, 640, 3, 3),
    "decoder.conv_in.weight": (640, 32, 3, 3),
    "decoder.up.4.attn.2.proj_out.weight": (640, 640, 1, 1),
    "decoder.conv_out.weight": (3, 160, 3, 3),
    "quantize.embedding.weight": (4096, 32),
    "quant_conv.weight": (32, 32, 3, 3),
    "post_quant_conv.weight": (32, 32, 3, 3),
    **{f"quantize.quant_resi.qresi_ls.{i}.weight": (32, 32, 3, 3) for i in range(4)},
    **{f"quantize.quant_resi.qresi_ls.{i}.bias": (32,) for i in range(4)},
}
# Keys whose stored shape the sheet cannot confirm. Each is handled explicitly, never skipped silently:
#   quantize.ema_vocab_hit_SV -- a training statistic [num_scales, V]; var.md: "the file's shape for that key is
#   unverified (it may not be 10)". Our model is [10, 4096]; a file with another first dimension is accepted and
#   replaced by the model's own buffer, exactly as VAR's VQVAE.load_state_dict does (tested below).
VAR_VAE_UNVERIFIED = {"quantize.ema_vocab_hit_SV": (10, 4096)}


def _meta(build):
    with torch.device("meta"):
        return build()


def test_var_vae_official_layout_matches_sheet():
    model = _meta(lambda: MultiScaleVQVAE(MSVQConfig.var_256()))
    sd = model.state_dict()
    assert len(sd) == 324  # var.md: 324 keys
    assert {k.split(".")[0] for k in sd} == {"encoder", "decoder", "quantize", "quant_conv", "post_quant_conv"}
    for k, shape in {**VAR_VAE_EXAMPLES, **VAR_VAE_UNVERIFIED}.items():
        assert tuple(sd[k].shape) == shape, k
    # var.md: 108.95 M parameters (encoder 44.11 M, decoder 64.65 M, quantize 0.168 M)
    count = lambda pre: sum(p.numel() for n, p in model.named_parameters() if n.startswith(pre))
    assert round(count("") / 1e6, 2) == 108.95
    assert round(count("encoder.") / 1e6, 2) == 44.11
    assert round(count("decoder.") / 1e6, 2) == 64.65
    assert round(count("quantize.") / 1e6, 3) == 0.168
    # var.md: computed scale -> phi map [0,0,1,1,1,2,2,3,3,3]
    phis = list(model.quantize.quant_resi.qresi_ls)
    assert [phis.index(model.quantize.phi(si)) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert model.quantize.quant_resi.ticks.round(3).tolist() == [0.083, 0.361, 0.639, 0.917]


# maskgit-taming-vptgen.md §3: key naming rules of the taming f16-1024 checkpoint
TAMING_KEY_RULES = [
    r"encoder\.conv_in\.(weight|bias)",
    r"(encoder\.down|decoder\.up)\.\d\.block\.\d\.(norm1|conv1|norm2|conv2|nin_shortcut)\.(weight|bias)",
    r"(encoder\.down|decoder\.up)\.\d\.attn\.\d\.(norm|q|k|v|proj_out)\.(weight|bias)",
    r"encoder\.down\.\d\.downsample\.conv\.(weight|bias)",
    r"decoder\.up\.\d\.upsample\.conv\.(weight|bias)",
    r"(encoder|decoder)\.mid\.(block_1|block_2)\.(norm1|conv1|norm2|conv2)\.(weight|bias)",
    r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)",
    r"(encoder|decoder)\.(norm_out|conv_out|conv_in)\.(weight|bias)",
    r"quantize\.embedding\.weight",
    r"(quant_conv|post_quant_conv)\.(weight|bias)",
]
# Shapes that follow from the sheet's configs/imagenet_vqgan.yaml values (ch 128, ch_mult [1,1,2,2,4], 2 res blocks,
# attn_resolutions [16] at 256 px, z_channels 256, embed_dim 256, n_embed 1024).
TAMING_SHAPES = {
    "quantize.embedding.weight": (1024, 256),
    "quant_conv.weight": (256, 256, 1, 1),  # sheet: 256 -> 256 1x1
    "post_quant_conv.weight": (256, 256, 1, 1),
    "encoder.conv_in.weight": (128, 3, 3, 3),
    "encoder.conv_out.weight": (256, 512, 3, 3),  # double_z false
    "encoder.down.4.attn.1.q.weight": (512, 512, 1, 1),  # 16x16 level
    "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "decoder.conv_in.weight": (512, 256, 3, 3),
    "decoder.up.4.attn.2.proj_out.weight": (512, 512, 1, 1),
    "decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),  # num_res_blocks + 1 blocks per decoder level
    "decoder.conv_out.weight": (3, 128, 3, 3),
}
# Not in the sheet (derived from the config above, so not an independent check): 343 keys, 72.14 M parameters.
TAMING_DERIVED = {"keys": 343, "mparams": 72.14}


def test_taming_vqgan_official_layout_matches_sheet():
    model = _meta(lambda: VQGAN(VQGANConfig.taming_f16_1024()))
    sd = model.state_dict()
    rules = [re.compile(r) for r in TAMING_KEY_RULES]
    assert [k for k in sd if not any(r.fullmatch(k) for r in rules)] == []
    for k, shape in TAMING_SHAPES.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith(("encoder.down.3.attn", "decoder.up.3.attn")) for k in sd)  # attention only at 16
    assert len(sd) == TAMING_DERIVED["keys"]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == TAMING_DERIVED["mparams"]


# ---------------------------------------------------------------------------------------------------------------
# Loading official files: formats, inferred sizes, strictness
# ---------------------------------------------------------------------------------------------------------------
def _save(sd, path, fmt):
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "lightning":
        torch.save({"state_dict": sd, "global_step": 7, "epoch": 1}, path)
    else:
        torch.save(sd, path)


@pytest.mark.parametrize("fmt,suffix", [("lightning", ".ckpt"), ("plain", ".pth"), ("safetensors", ".safetensors")])
def test_load_pretrained_vqgan_formats(tmp_path, fmt, suffix):
    torch.manual_seed(0)
    ref = VQGAN(TINY_VQGAN).eval()
    sd = dict(ref.state_dict())
    if fmt == "lightning":  # taming's loss module (LPIPS + discriminator) is stored too and must be ignored
        sd["loss.discriminator.main.0.weight"] = torch.zeros(2, 3, 4, 4)
        sd["loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(1, 2, 1, 1)
    path = tmp_path / f"vqgan{suffix}"
    _save(sd, path, fmt)
    model = load_pretrained_vqgan(path, resolution=16)  # sizes read from the file
    assert model.config.attn_resolutions == (8,) and model.config.ch_mult == (1, 2)
    x = _images()
    with torch.no_grad():
        assert torch.equal(model.encode_to_indices(x), ref.encode_to_indices(x))
        assert torch.equal(model.decode_indices(ref.encode_to_indices(x)), ref.reconstruct(x))


@pytest.mark.parametrize("fmt,suffix", [("plain", ".pth"), ("safetensors", ".safetensors")])
def test_load_pretrained_msvq_formats(tmp_path, fmt, suffix):
    torch.manual_seed(0)
    ref = MultiScaleVQVAE(TINY_MSVQ).eval()
    path = tmp_path / f"vae{suffix}"
    _save(ref.state_dict(), path, fmt)
    model = load_pretrained_msvq(path, patch_nums=TINY_MSVQ.patch_nums)
    assert model.config.share_quant_resi == 4 and model.config.ch_mult == (1, 2)
    x = _images()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.img_to_idxBl(x), ref.img_to_idxBl(x)))


def test_msvq_ema_hit_buffer_with_other_scale_count_is_replaced(tmp_path):
    ref = MultiScaleVQVAE(TINY_MSVQ)
    sd = dict(ref.state_dict())
    sd["quantize.ema_vocab_hit_SV"] = torch.ones(7, TINY_MSVQ.vocab_size)  # the unverified key (see above)
    torch.save(sd, tmp_path / "vae.pth")
    model = load_pretrained_msvq(tmp_path / "vae.pth", patch_nums=TINY_MSVQ.patch_nums)
    assert model.quantize.ema_vocab_hit_SV.shape == (4, TINY_MSVQ.vocab_size)


def test_strict_load_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    sd = dict(VQGAN(TINY_VQGAN).state_dict())
    del sd["decoder.conv_out.bias"]
    sd["decoder.extra.weight"] = torch.zeros(1)
    sd["post_quant_conv.weight"] = torch.zeros(8, 4, 3, 3)
    torch.save({"state_dict": sd}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointMismatch) as err:
        load_pretrained_vqgan(tmp_path / "bad.ckpt", config=TINY_VQGAN)
    msg = str(err.value)
    assert "bad.ckpt" in msg and "decoder.conv_out.bias" in msg and "decoder.extra.weight" in msg
    assert "post_quant_conv.weight: (8, 4, 3, 3) vs (8, 4, 1, 1)" in msg

    # a VAR file for another vocabulary fails against an explicit config
    torch.save(MultiScaleVQVAE(TINY_MSVQ).state_dict(), tmp_path / "vae.pth")
    other = MSVQConfig(**{**TINY_MSVQ.to_dict(), "vocab_size": 32})
    with pytest.raises(CheckpointMismatch, match=r"quantize\.embedding\.weight: \(16, 4\) vs \(32, 4\)"):
        load_pretrained_msvq(tmp_path / "vae.pth", config=other)
    with pytest.raises(CheckpointError, match="bad.ckpt"):  # a VQGAN file is not a VAR VQVAE
        load_pretrained_msvq(tmp_path / "bad.ckpt", patch_nums=(1, 2, 4, 8))


def test_saved_tokenizer_round_trip_and_family_check(tmp_path):
    model = MultiScaleVQVAE(TINY_MSVQ).eval()
    save_tokenizer(tmp_path / "model.pt", model)
    loaded = load_tokenizer(tmp_path / "model.pt", family="msvq")
    x = _images()
    with torch.no_grad():
        assert torch.equal(loaded.idxBl_to_img(model.img_to_idxBl(x)), model.idxBl_to_img(model.img_to_idxBl(x)))
    with pytest.raises(CheckpointError, match="'msvq' tokenizer, but a 'vqgan'"):
        load_tokenizer(tmp_path / "model.pt", family="vqgan")
    torch.save(model.state_dict(), tmp_path / "raw.pth")
    with pytest.raises(CheckpointError, match="load_pretrained"):
        load_tokenizer(tmp_path / "raw.pth")


# ---------------------------------------------------------------------------------------------------------------
# VAR semantics of the multi-scale quantizer
# ---------------------------------------------------------------------------------------------------------------
def test_msvq_var_functions_agree():
    torch.manual_seed(1)
    model = MultiScaleVQVAE(TINY_MSVQ).eval()
    model.quantize.embedding.weight.data.normal_()
    x = _images(3)
    with torch.no_grad():
        idx = model.img_to_idxBl(x)
        assert [t.shape for t in idx] == [(3, p * p) for p in TINY_MSVQ.patch_nums]
        var_in = model.idxBl_to_var_input(idx)
        L = sum(p * p for p in TINY_MSVQ.patch_nums)
        assert var_in.shape == (3, L - 1, TINY_MSVQ.z_channels)

        # autoregressive replay with the true tokens reproduces the teacher-forcing inputs and the final f_hat
        SN, C, H = len(TINY_MSVQ.patch_nums), TINY_MSVQ.z_channels, TINY_MSVQ.patch_nums[-1]
        f_hat = torch.zeros(3, C, H, H)
        nxt, start = [], 0
        h = model.idxBl_to_h(idx)
        for si in range(SN):
            f_hat, next_map = model.get_next_autoregressive_input(si, SN, f_hat, h[si])
            if si < SN - 1:
                nxt.append(next_map.flatten(2).transpose(1, 2))
        assert torch.allclose(torch.cat(nxt, 1), var_in, atol=1e-5)
        f_enc = model.quantize.f_to_idxBl_or_fhat(model.encode_latent(x), to_fhat=True)[-1]
        assert torch.allclose(f_hat, f_enc, atol=1e-5)
        assert torch.allclose(model.idxBl_to_img(idx), model.img_to_reconstructed_img(x, last_one=True), atol=1e-5)
        assert len(model.idxBl_to_img(idx, last_one=False)) == SN

        # first scale: area mean of the whole latent; phi blends 0.5 * h + 0.5 * conv(h)
        f = model.encode_latent(x)
        d = torch.cdist(f.mean((2, 3)), model.quantize.embedding.weight)
        assert torch.equal(idx[0][:, 0], d.argmin(1))
        phi = model.quantize.phi(0)
        hh = torch.randn(2, C, 4, 4)
        assert torch.allclose(phi(hh), 0.5 * hh + 0.5 * F.conv2d(hh, phi.weight, phi.bias, padding=1), atol=1e-6)


def test_msvq_patch_nums_must_end_at_latent_size():
    model = MultiScaleVQVAE(TINY_MSVQ)
    with pytest.raises(ValueError, match="latent size"):
        model.img_to_idxBl(_images(1, size=32))
    with pytest.raises(ValueError, match="must end in the latent side"):
        model_config("msvq", MSVQParams(patch_nums=[1, 2, 4]), 32)


# ---------------------------------------------------------------------------------------------------------------
# Training: loss goes down, resume is exact, optional terms run
# ---------------------------------------------------------------------------------------------------------------
def _tiny_data(n=32, size=16):
    """Two-colour blocky images (uint8), easy to compress."""
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (n, 3, 1, 1), generator=g, dtype=torch.uint8).expand(n, 3, size, size).clone()
    fg = torch.randint(0, 256, (n, 3, 1, 1), generator=g, dtype=torch.uint8)
    for i in range(n):
        r, c = (torch.randint(0, size // 2, (2,), generator=g)).tolist()
        base[i, :, r:r + size // 2, c:c + size // 2] = fg[i, :, :, :]
    return base


TRAIN = dict(batch_size=16, lr=3e-3, warmup_steps=2, ae_warmup_steps=4, restart_every=5, checkpoint_every=3)


@pytest.mark.parametrize("family,cfg", [("vqgan", TINY_VQGAN), ("msvq", TINY_MSVQ)])
def test_training_lowers_loss(family, cfg):
    torch.manual_seed(0)
    cfg = dataclasses.replace(cfg, norm_groups=4)
    model = zero_init_residuals(VQGAN(cfg) if family == "vqgan" else MultiScaleVQVAE(cfg))
    tp = TokenizerTrainParams(steps=30, **{**TRAIN, "batch_size": 32, "hflip": False, "lr": 5e-3})  # one fixed batch
    res = train_tokenizer(model, _tiny_data(), tp, seed=0, progress=False)
    first = sum(h["recon"] for h in res.history[:3]) / 3
    last = sum(h["recon"] for h in res.history[-3:]) / 3
    assert last < 0.7 * first
    assert all(h["vq"] > 0 for h in res.history[TRAIN["ae_warmup_steps"]:])  # quantized after the warm-up
    assert any(h.get("restarted", 0) > 0 or h.get("used_codes") for h in res.history)


def test_resume_matches_uninterrupted_run(tmp_path):
    tp = TokenizerTrainParams(steps=8, **TRAIN)
    data = _tiny_data()
    torch.manual_seed(0)
    a = MultiScaleVQVAE(TINY_MSVQ)
    train_tokenizer(a, data, tp, seed=3, progress=False)

    torch.manual_seed(0)
    b = MultiScaleVQVAE(TINY_MSVQ)
    state = tmp_path / "train_state.pt"
    train_tokenizer(b, data, tp, seed=3, state_path=state, fingerprint="x", stop_after=6, progress=False)
    assert state.exists()
    torch.manual_seed(123)  # a resumed process starts from other weights and RNG state
    c = MultiScaleVQVAE(TINY_MSVQ)
    res = train_tokenizer(c, data, tp, seed=3, state_path=state, fingerprint="x", progress=False)
    assert res.resumed_from == 6 and res.steps_run == 2
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k]), k

    # a state written for other params is not resumed
    d = MultiScaleVQVAE(TINY_MSVQ)
    assert train_tokenizer(d, data, tp, seed=3, state_path=state, fingerprint="y", progress=False).resumed_from == 0


def test_adversarial_term_trains(tmp_path):
    torch.manual_seed(0)
    tp = TokenizerTrainParams(steps=3, **{**TRAIN, "ae_warmup_steps": 0},
                              adversarial=dict(weight=0.5, start_step=1, channels=8, layers=1))
    res = train_tokenizer(VQGAN(TINY_VQGAN), _tiny_data(), tp, seed=0, progress=False)
    assert "g_adv" in res.history[-1] and "d_adv" in res.history[-1]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)


def test_perceptual_term_needs_local_weights(tmp_path):
    from genvpt.tokenizers.train import VGGPerceptual, vgg16_features

    with pytest.raises(ValueError, match="vgg_weights"):
        train_tokenizer(VQGAN(TINY_VQGAN), _tiny_data(), TokenizerTrainParams(steps=1, perceptual=dict(weight=1.0)),
                        seed=0, progress=False)
    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in vgg16_features().state_dict().items()}, tmp_path / "vgg16.pth")
    from genvpt.tokenizers.params import PerceptualParams

    loss = VGGPerceptual(PerceptualParams(weight=1.0, vgg_weights=str(tmp_path / "vgg16.pth")))
    x = _images(2)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(x, x.flip(0)).item() > 0


# ---------------------------------------------------------------------------------------------------------------
# Params
# ---------------------------------------------------------------------------------------------------------------
def test_params_defaults_and_errors():
    from genvpt.config import ConfigError, validate_params

    p = validate_params({})
    assert isinstance(p.tokenizer, TokenizerParams)
    assert p.tokenizer.msvq.patch_nums == [1, 2, 3, 4, 6, 8]
    with pytest.raises(ConfigError, match="tokenizer.msvq.patch_nums"):
        validate_params({"tokenizer": {"msvq": {"patch_nums": [4, 2]}}})
    with pytest.raises(ConfigError, match="allowed keys here"):
        validate_params({"tokenizer": {"vqgan": {"chanels": 3}}})
    with pytest.raises(ConfigError, match="recon_loss"):
        validate_params({"tokenizer": {"vqgan": {"train": {"recon_loss": "l3"}}}})
    # the embedded defaults give 8x8 tokens at 32 px for both families
    assert model_config("vqgan", VQGANParams(), 32).downsample == 4
    assert model_config("msvq", MSVQParams(), 32).patch_nums[-1] == 8
