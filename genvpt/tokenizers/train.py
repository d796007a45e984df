"""Training and evaluation of the embedded default's tokenizers (both families share this loop).

Loss = reconstruction (l1 / l2) + codebook_weight * VQ loss (codebook + beta * commitment; averaged over scales for
the multi-scale tokenizer, as VAR) + optional LPIPS-style perceptual term (needs local VGG16 weights) + optional
patch-GAN hinge term with taming's adaptive weight.

Recipe that makes a tiny tokenizer train in a few hundred CPU steps: residual branches start at zero
(``zero_init_residuals``); the first ``ae_warmup_steps`` train a plain autoencoder (quantizer bypassed); then the
codebook is set by k-means on the encoder outputs (twice for the multi-scale quantizer, so the second round sees
residuals); codes unused for ``restart_every`` steps are re-seeded from the batch's quantizer inputs (dead-code
restarts) until ``restart_until`` of the run. Every random choice is drawn from a generator seeded by
(seed, step), so a resumed run matches an uninterrupted one exactly on CPU.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import CheckpointError, load_file, load_state_dict_file, strict_load
from ..training import TrainCheckpoint, check_finite, cosine_lambda
from ..training import resolve_device as _resolve_device
from .params import MSVQParams, PerceptualParams, TokenizerTrainParams, VQGANParams
from . import decode_tokens, encode_tokens
from .msvq import MSVQConfig, MultiScaleVQVAE
from .vqgan import VQGAN, VQGANConfig, VQOutput

log = logging.getLogger(__name__)

__all__ = [
    "model_config",
    "build_model",
    "zero_init_residuals",
    "PatchDiscriminator",
    "VGGPerceptual",
    "TrainResult",
    "train_tokenizer",
    "init_codebook",
    "kmeans",
    "evaluate_tokenizer",
    "codebook_stats",
    "psnr_uint8",
    "to_uint8",
    "reconstruction_grid",
    "to_float",
    "resolve_device",
]


def resolve_device(name: str = "auto") -> torch.device:
    return _resolve_device(name, "tokenizer.device")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


# ---- models from params --------------------------------------------------------------------------------------
def model_config(family: str, p: VQGANParams | MSVQParams, image_size: int) -> VQGANConfig | MSVQConfig:
    """The model config of an embedded tokenizer for images of side ``image_size``."""
    if family == "vqgan":
        cfg = VQGANConfig(
            resolution=image_size, ch=p.ch, ch_mult=tuple(p.ch_mult), num_res_blocks=p.num_res_blocks,
            attn_resolutions=tuple(p.attn_resolutions), z_channels=p.z_channels, n_embed=p.n_embed,
            embed_dim=p.embed_dim, dropout=p.dropout, beta=p.beta, norm_groups=p.norm_groups,
        )
        if image_size % cfg.downsample:
            raise ValueError(f"tokenizer.vqgan: image size {image_size} is not a multiple of the downsample {cfg.downsample}")
        return cfg
    if family == "msvq":
        cfg = MSVQConfig(
            vocab_size=p.vocab_size, z_channels=p.z_channels, ch=p.ch, ch_mult=tuple(p.ch_mult),
            num_res_blocks=p.num_res_blocks, dropout=p.dropout, beta=p.beta, using_znorm=p.using_znorm,
            quant_resi=p.quant_resi, share_quant_resi=p.share_quant_resi, patch_nums=tuple(p.patch_nums),
            using_sa=p.using_sa, using_mid_sa=p.using_mid_sa, norm_groups=p.norm_groups,
        )
        check_patch_nums(cfg, image_size)
        return cfg
    raise ValueError(f"unknown tokenizer family {family!r}; allowed: vqgan, msvq")


def check_patch_nums(cfg: MSVQConfig, image_size: int) -> None:
    latent = image_size // cfg.downsample
    if image_size % cfg.downsample or cfg.patch_nums[-1] != latent:
        raise ValueError(
            f"tokenizer.msvq.patch_nums {list(cfg.patch_nums)} must end in the latent side {image_size}/"
            f"{cfg.downsample} = {image_size / cfg.downsample:g} for {image_size} px images"
        )


def zero_init_residuals(model: nn.Module) -> nn.Module:
    """Zero the last conv of every residual branch (res blocks' ``conv2``, attention ``proj_out``), so each block
    starts as the identity; a tiny model trained from scratch converges faster."""
    from .blocks import AttnBlock, ResnetBlock

    for m in model.modules():
        last = m.conv2 if isinstance(m, ResnetBlock) else m.proj_out if isinstance(m, AttnBlock) else None
        if last is not None:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
    return model


def build_model(family: str, config: VQGANConfig | MSVQConfig | dict) -> VQGAN | MultiScaleVQVAE:
    if family == "vqgan":
        return VQGAN(config if isinstance(config, VQGANConfig) else VQGANConfig(**config))
    if family == "msvq":
        return MultiScaleVQVAE(config if isinstance(config, MSVQConfig) else MSVQConfig(**config))
    raise ValueError(f"unknown tokenizer family {family!r}; allowed: vqgan, msvq")


# ---- optional loss terms -------------------------------------------------------------------------------------
class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al.) as used by taming: 4x4 convs, stride 2, LeakyReLU 0.2, BatchNorm."""

    def __init__(self, in_channels: int = 3, ch: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ch * prev, ch * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(ch * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ch * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` up to relu5_3 (same module indices, so its ``features.*`` keys load)."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
            c_in = v
    return nn.Sequential(*layers)


class VGGPerceptual(nn.Module):
    """LPIPS-style distance on torchvision VGG16 features (relu1_2 .. relu5_3), unit-normalised per position.
    Channel weights come from an LPIPS ``vgg.pth`` (``lin{i}.model.1.weight``) when given, else uniform."""

    LAYERS = (3, 8, 15, 22, 29)
    CHANNELS = (64, 128, 256, 512, 512)

    def __init__(self, p: PerceptualParams):
        super().__init__()
        sd = load_state_dict_file(p.vgg_weights)
        features = vgg16_features()
        strict_load(features, {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")},
                    source=str(p.vgg_weights))
        self.features = features.eval().requires_grad_(False)
        if p.lpips_weights:
            lin = load_state_dict_file(p.lpips_weights)
            ws = []
            for i, c in enumerate(self.CHANNELS):
                key = f"lin{i}.model.1.weight"
                if key not in lin or tuple(lin[key].shape) != (1, c, 1, 1):
                    raise CheckpointError(f"{p.lpips_weights}: expected {key} of shape (1, {c}, 1, 1)")
                ws.append(lin[key].float())
        else:
            ws = [torch.full((1, c, 1, 1), 1.0 / c) for c in self.CHANNELS]
        for i, w in enumerate(ws):
            self.register_buffer(f"w{i}", w)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, y]).sub(self.shift).div(self.scale)
        total = x.new_zeros(())
        k = 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.LAYERS:
                a, b = h.chunk(2)
                a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
                b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
                total = total + ((a - b).square() * getattr(self, f"w{k}")).sum(1).mean()
                k += 1
        return total


def _recon_loss(kind: str, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if kind == "l1":
        return (recon - x).abs().mean()
    if kind == "l2":
        return (recon - x).square().mean()
    return (recon - x).abs().mean() + (recon - x).square().mean()


# ---- training ------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process during training (all threads)
    steps_run: int = 0
    resumed_from: int = 0


class _Optimizers:
    """Generator and (optional) discriminator optimizers saved/loaded as one object by TrainCheckpoint."""

    def __init__(self, g: torch.optim.Optimizer, d: Optional[torch.optim.Optimizer]):
        self.g, self.d = g, d

    def state_dict(self) -> dict:
        return {"g": self.g.state_dict(), "d": self.d.state_dict() if self.d else {}}

    def load_state_dict(self, sd: dict) -> None:
        self.g.load_state_dict(sd["g"])
        if self.d is not None and sd.get("d"):
            self.d.load_state_dict(sd["d"])


def _step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7_919 + salt) % (2**63 - 1))
    return g


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Batch ``step`` of an epoch-wise shuffle; depends only on (seed, step)."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=_step_generator(seed, epoch, salt=17))
    return perm[k * batch_size:(k + 1) * batch_size]


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int, g: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on rows of ``x`` (k-means++-lite: random distinct starts); empty clusters keep their centre."""
    x = x.float()
    start = torch.randperm(x.shape[0], generator=g)[:k] if x.shape[0] >= k else torch.randint(0, x.shape[0], (k,), generator=g)
    c = x[start.to(x.device)].clone()
    for _ in range(iters):
        d = x.square().sum(1, keepdim=True) + c.square().sum(1) - 2 * x @ c.t()
        a = d.argmin(1)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        cnt = torch.bincount(a, minlength=k).to(x)
        nz = cnt > 0
        c[nz] = sums[nz] / cnt[nz, None]
    return c


@torch.no_grad()
def init_codebook(model, images: torch.Tensor, how: str, *, seed: int, batch_size: int, n_images: int = 512,
                  rounds: int = 2, iters: int = 10) -> None:
    """Initialise the codebook from encoder outputs: ``"sample"`` picks random quantizer inputs, ``"kmeans"`` runs
    k-means on them. For the multi-scale quantizer this is repeated ``rounds`` times, so later rounds see the
    residuals that the previous codebook leaves."""
    g = _step_generator(seed, 0, salt=29)
    was_training = model.training
    model.eval()
    emb = model.quantize.embedding
    idx = torch.randperm(images.shape[0], generator=g)[:n_images].to(images.device)
    for r in range(rounds if isinstance(model, MultiScaleVQVAE) else 1):
        q = torch.cat([model(to_float(images[idx[i:i + batch_size]]), quantize=r > 0).queries
                       for i in range(0, idx.numel(), batch_size)])
        if how == "kmeans":
            emb.weight.data.copy_(kmeans(q, emb.num_embeddings, iters, g))
        else:
            _restart_codes(emb, torch.arange(emb.num_embeddings), q, g)
    model.train(was_training)


@torch.no_grad()
def _restart_codes(embedding: nn.Embedding, codes: torch.Tensor, queries: torch.Tensor, g: torch.Generator) -> None:
    if codes.numel() == 0 or queries.numel() == 0:
        return
    pick = torch.randint(0, queries.shape[0], (codes.numel(),), generator=g)
    new = queries.detach().cpu()[pick]
    noise = torch.randn(new.shape, generator=g) * (new.std() * 0.01 + 1e-6)
    embedding.weight.data[codes.to(embedding.weight.device)] = (new + noise).to(embedding.weight)


def train_tokenizer(
    model: VQGAN | MultiScaleVQVAE,
    train_images: torch.Tensor,
    tp: TokenizerTrainParams,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    state_path: Optional[str | Path] = None,
    fingerprint: Optional[str] = None,
    stop_after: Optional[int] = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place on ``train_images`` (uint8 [N, 3, H, W]).

    ``state_path``: resumable training state (written every ``tp.checkpoint_every`` steps); a state written for
    another ``fingerprint`` (other params or data) is discarded instead of resumed. ``stop_after``: stop after this
    step (to test resuming).
    """
    device = torch.device(device)
    model.to(device, memory_format=torch.channels_last).train()  # faster convolutions on CPU and GPU
    N = train_images.shape[0]
    bs = min(tp.batch_size, N)
    images = train_images.to(device)

    g_opt = torch.optim.AdamW(model.parameters(), lr=tp.lr, betas=(0.9, 0.99), weight_decay=tp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(g_opt, cosine_lambda(tp.steps, tp.warmup_steps, tp.min_lr_ratio))
    disc, d_opt = None, None
    adv = tp.adversarial
    if adv.weight > 0:
        disc = PatchDiscriminator(3, adv.channels, adv.layers).to(device)
        d_opt = torch.optim.Adam(disc.parameters(), lr=adv.lr, betas=(0.5, 0.9))
    if tp.perceptual.weight > 0 and not tp.perceptual.vgg_weights:
        raise ValueError("perceptual.weight > 0 needs perceptual.vgg_weights (a local torchvision vgg16 state dict)")
    perceptual = VGGPerceptual(tp.perceptual).to(device) if tp.perceptual.weight > 0 else None

    holder = nn.ModuleDict({"model": model, **({"disc": disc} if disc is not None else {})})
    opts = _Optimizers(g_opt, d_opt)
    V = model.n_embed
    hits = torch.zeros(V, dtype=torch.long)
    history: list[dict] = []
    start = 0
    ckpt = None
    if state_path is not None:
        ckpt = TrainCheckpoint(state_path, every=tp.checkpoint_every)
        if ckpt.path.exists():
            saved = load_file(ckpt.path)
            if saved.get("extra", {}).get("fingerprint") != fingerprint:
                log.warning("%s was written for other params or data; starting from scratch", ckpt.path)
                ckpt.remove()
        start = ckpt.resume(holder, opts, sched)
        if start:
            hits = ckpt.extra.get("hits", hits).clone()
            history = list(ckpt.extra.get("history", []))
            if hasattr(model.quantize, "record_hit"):
                model.quantize.record_hit = int(ckpt.extra.get("record_hit", 0))

    restart_stop = int(tp.restart_until * tp.steps)
    used_codes = int(history[-1]["used_codes"]) if history else 0
    last = tp.steps if stop_after is None else min(tp.steps, stop_after)
    t0, c0 = time.perf_counter(), time.process_time()
    bar = tqdm(range(start, last), desc=f"train {model.family}", disable=not progress, leave=False)
    for step in bar:
        g = _step_generator(seed, step, salt=1)
        x = to_float(images[_batch_indices(N, bs, seed, step).to(device)]).contiguous(memory_format=torch.channels_last)
        if tp.hflip:
            flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)

        quantize = step >= tp.ae_warmup_steps
        if step == tp.ae_warmup_steps and tp.codebook_init != "random":
            init_codebook(model, images, tp.codebook_init, seed=seed, batch_size=bs)

        out: VQOutput = model(x, quantize=quantize)
        rec = _recon_loss(tp.recon_loss, out.recon, x)
        loss = rec + tp.codebook_weight * out.vq_loss
        # every row has the same columns (curve.csv): optional terms are 0 while off
        logs = {"step": step + 1, "loss": 0.0, "recon": rec.item(), "vq": out.vq_loss.item(),
                "lr": sched.get_last_lr()[0], "used_codes": used_codes, "restarted": 0}
        if disc is not None:
            logs.update(g_adv=0.0, d_adv=0.0)
        if perceptual is not None:
            p_loss = perceptual(out.recon, x)
            loss = loss + tp.perceptual.weight * p_loss
            logs["perceptual"] = p_loss.item()
        if disc is not None and step >= adv.start_step:
            g_loss = -disc(out.recon).mean()
            nll_grad = torch.autograd.grad(rec, model.last_layer, retain_graph=True)[0]
            g_grad = torch.autograd.grad(g_loss, model.last_layer, retain_graph=True)[0]
            d_weight = (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach() * adv.weight
            loss = loss + d_weight * g_loss
            logs["g_adv"] = g_loss.item()
        check_finite(loss, step + 1, f"tokenizer {model.family} training", ckpt)
        g_opt.zero_grad(set_to_none=True)
        loss.backward()
        if tp.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip)
        g_opt.step()
        sched.step()
        if disc is not None and step >= adv.start_step:
            real, fake = disc(x), disc(out.recon.detach())
            d_loss = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
            check_finite(d_loss, step + 1, f"tokenizer {model.family} training (discriminator)", ckpt)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            logs["d_adv"] = d_loss.item()

        with torch.no_grad():
            for idx in out.indices if quantize else ():
                hits += idx.flatten().bincount(minlength=V).cpu()
            if quantize and tp.restart_every and (step + 1) % tp.restart_every == 0:
                dead = (hits == 0).nonzero().flatten()
                used_codes = logs["used_codes"] = int((hits > 0).sum())
                if step + 1 <= restart_stop and dead.numel():
                    _restart_codes(model.quantize.embedding, dead, out.queries, g)
                    logs["restarted"] = int(dead.numel())
                hits.zero_()
        logs["loss"] = loss.item()
        history.append(logs)
        if progress:
            bar.set_postfix(recon=f"{rec.item():.4f}", vq=f"{out.vq_loss.item():.4f}")
        if ckpt is not None:
            extra = {"hits": hits, "history": history, "fingerprint": fingerprint,
                     "record_hit": getattr(model.quantize, "record_hit", 0)}
            ckpt.maybe_save(step + 1, holder, opts, sched, **extra)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    model.to(memory_format=torch.contiguous_format).eval()  # as a loaded model: same numerics downstream
    return TrainResult(history, seconds, cpu_seconds, last - start, start)


# ---- evaluation ----------------------------------------------------------------------------------------------
def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, as images are saved."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB between uint8 batches (capped at 100 dB for identical images)."""
    mse = (a.float() - b.float()).square().flatten(1).mean(1)
    return (10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).clamp(max=100.0)


def codebook_stats(counts: torch.Tensor) -> dict[str, float]:
    """Usage (fraction of codes used) and perplexity (exp entropy of the code histogram)."""
    total = counts.sum().item()
    if total == 0:
        return {"usage": 0.0, "perplexity": 0.0}
    p = counts.double() / total
    ent = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"usage": (counts > 0).double().mean().item(), "perplexity": math.exp(ent)}


@torch.inference_mode()
def evaluate_tokenizer(
    model: VQGAN | MultiScaleVQVAE, images: torch.Tensor, *, batch_size: int = 256, device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """PSNR of the token reconstructions and codebook usage / perplexity (overall and per scale) on uint8 images."""
    device = torch.device(device)
    model.to(device).eval()
    V = model.n_embed
    per_scale: Optional[list[torch.Tensor]] = None
    psnrs = []
    for i in tqdm(range(0, images.shape[0], batch_size), desc="evaluate", disable=not progress, leave=False):
        real = images[i:i + batch_size]
        scales = encode_tokens(model, to_float(real.to(device)))
        if per_scale is None:
            per_scale = [torch.zeros(V, dtype=torch.long) for _ in scales]
        for c, s in zip(per_scale, scales):
            c += s.flatten().bincount(minlength=V).cpu()
        psnrs.append(psnr_uint8(to_uint8(decode_tokens(model, scales)).cpu(), real.cpu()))
    assert per_scale is not None, "no images to evaluate"
    psnr = torch.cat(psnrs)
    grid = [round(c.sum().item() / images.shape[0]) for c in per_scale]
    side = [round(math.sqrt(n)) for n in grid]
    overall = codebook_stats(torch.stack(per_scale).sum(0))
    result: dict[str, Any] = {
        "psnr": psnr.mean().item(),
        "psnr_min": psnr.min().item(),
        "codebook_usage": overall["usage"],
        "perplexity": overall["perplexity"],
        "vocab_size": V,
        "images": int(images.shape[0]),
        "tokens_per_image": int(sum(grid)),
    }
    if len(per_scale) > 1:
        result["scales"] = {f"{s}x{s}": codebook_stats(c) for s, c in zip(side, per_scale)}
    return result


@torch.inference_mode()
def reconstruction_grid(
    model: VQGAN | MultiScaleVQVAE, images: torch.Tensor, path: str | Path, *, n: int = 16, device="cpu"
) -> Path:
    """PNG: the first row holds originals, the last row their token reconstructions; a multi-scale tokenizer adds
    one row per prefix of scales (coarse to fine) in between."""
    from PIL import Image

    from ..io import atomic_path

    device = torch.device(device)
    model.to(device).eval()
    real = images[:n].to(device)
    x = to_float(real)
    if isinstance(model, MultiScaleVQVAE):
        rows = [real] + [to_uint8(r) for r in model.img_to_reconstructed_img(x, last_one=False)]
    else:
        rows = [real, to_uint8(model.reconstruct(x))]
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # [3, rows*H, n*W]
    zoom = max(1, 64 // images.shape[-1])
    arr = grid.permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    img = Image.fromarray(arr).resize((arr.shape[1] * zoom, arr.shape[0] * zoom), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)
