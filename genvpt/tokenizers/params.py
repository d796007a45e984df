"""The ``tokenizer:`` section of params.yaml (validated; every default is the embedded default's value).

Sizes describe the embedded default's tiny tokenizers. When ``<family>.checkpoint`` names an official file, the
architecture is read from that file instead (only ``msvq.patch_nums`` must be set, e.g. 1,2,3,4,5,6,8,10,13,16 for
VAR at 256 px) and nothing is trained.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from ..schema import NAME_PATTERN as _NAME, StrictModel

__all__ = [
    "AdversarialParams",
    "PerceptualParams",
    "TokenizerTrainParams",
    "VQGANParams",
    "MSVQParams",
    "TokenizeParams",
    "TokenizerParams",
    "BROAD_DATA",
]


class AdversarialParams(StrictModel):
    """Optional patch-GAN term (hinge loss, taming's adaptive weight). ``weight: 0`` turns it off."""

    weight: float = Field(default=0.0, ge=0.0)
    start_step: int = Field(default=0, ge=0)
    channels: int = Field(default=32, ge=1)
    layers: int = Field(default=2, ge=1, le=5)
    lr: float = Field(default=2e-4, gt=0.0)


class PerceptualParams(StrictModel):
    """Optional LPIPS-style VGG16 feature loss; needs local weights (nothing is downloaded).
    ``vgg_weights``: a torchvision vgg16 state dict; ``lpips_weights``: optional LPIPS ``vgg.pth`` linear heads
    (uniform channel weights without it)."""

    weight: float = Field(default=0.0, ge=0.0)
    vgg_weights: Optional[str] = None
    lpips_weights: Optional[str] = None

    @field_validator("lpips_weights")
    @classmethod
    def _needs_vgg(cls, v, info):
        if v is not None and not info.data.get("vgg_weights"):
            raise ValueError("lpips_weights needs vgg_weights too")
        return v


class TokenizerTrainParams(StrictModel):
    """Training of an embedded tokenizer on the source domain's train split."""

    steps: int = Field(default=1600, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=4e-3, gt=0.0)
    warmup_steps: int = Field(default=20, ge=0)
    min_lr_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    grad_clip: float = Field(default=1.0, ge=0.0)  # max gradient norm; 0 = off
    recon_loss: Literal["l1", "l2", "l1+l2"] = "l2"
    codebook_weight: float = Field(default=1.0, ge=0.0)
    hflip: bool = True
    zero_init_residual: bool = True  # residual branches start at zero (identity blocks): faster from scratch
    ae_warmup_steps: int = Field(default=100, ge=0)  # first steps train a plain autoencoder (no quantizer) ...
    codebook_init: Literal["kmeans", "sample", "random"] = "kmeans"  # ... then the codebook is set from its outputs
    restart_every: int = Field(default=25, ge=0)  # dead-code restarts every N steps (0 = off)
    restart_until: float = Field(default=0.85, ge=0.0, le=1.0)  # ... during this fraction of training
    checkpoint_every: int = Field(default=100, ge=1)
    adversarial: AdversarialParams = AdversarialParams()
    perceptual: PerceptualParams = PerceptualParams()


def _positive_list(v: list[int], name: str) -> list[int]:
    if not v or any(int(x) < 1 for x in v):
        raise ValueError(f"{name} must be a non-empty list of positive integers")
    return [int(x) for x in v]


class VQGANParams(StrictModel):
    """taming VQGAN. Official ImageNet f16-1024: ch 128, ch_mult [1,1,2,2,4], num_res_blocks 2,
    attn_resolutions [16] (at 256 px), z_channels 256, n_embed 1024, embed_dim 256."""

    checkpoint: Optional[str] = None  # official .ckpt / .pth / .safetensors: imported, not trained
    ch: int = Field(default=32, ge=1)
    ch_mult: list[int] = [1, 1, 1]  # downsample = 2^(len-1): 4 -> 8x8 tokens at 32 px
    num_res_blocks: int = Field(default=1, ge=1)
    attn_resolutions: list[int] = []  # feature-map sides (image side / 2^level) with attention
    z_channels: int = Field(default=64, ge=1)
    n_embed: int = Field(default=128, ge=2)
    embed_dim: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    beta: float = Field(default=0.25, ge=0.0)
    norm_groups: int = Field(default=8, ge=1)  # GroupNorm groups (32 in the official models)
    train: TokenizerTrainParams = TokenizerTrainParams()

    @field_validator("ch_mult")
    @classmethod
    def _ch_mult(cls, v):
        return _positive_list(v, "ch_mult")


class MSVQParams(StrictModel):
    """VAR multi-scale residual VQ-VAE. Official vae_ch160v4096z32: ch 160, ch_mult [1,1,2,2,4],
    num_res_blocks 2, z_channels 32, vocab_size 4096, patch_nums [1,2,3,4,5,6,8,10,13,16] (256 px)."""

    checkpoint: Optional[str] = None
    ch: int = Field(default=32, ge=1)
    ch_mult: list[int] = [1, 1, 1]
    num_res_blocks: int = Field(default=1, ge=1)
    z_channels: int = Field(default=16, ge=1)  # Cvae
    vocab_size: int = Field(default=128, ge=2)
    patch_nums: list[int] = [1, 2, 3, 4, 6, 8]  # the last must equal image side / downsample
    quant_resi: float = Field(default=0.5, ge=0.0, le=1.0)
    share_quant_resi: int = Field(default=4, ge=0)
    using_znorm: bool = False
    using_sa: bool = False
    using_mid_sa: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    beta: float = Field(default=0.25, ge=0.0)
    norm_groups: int = Field(default=8, ge=1)  # GroupNorm groups (32 in the official models)
    train: TokenizerTrainParams = TokenizerTrainParams()

    @field_validator("ch_mult")
    @classmethod
    def _ch_mult(cls, v):
        return _positive_list(v, "ch_mult")

    @field_validator("patch_nums")
    @classmethod
    def _patch_nums(cls, v):
        v = _positive_list(v, "patch_nums")
        if len(v) < 2 or v != sorted(set(v)):
            raise ValueError("patch_nums must be at least two strictly increasing sizes")
        return v


class TokenizeParams(StrictModel):
    """The tokenize stage."""

    batch_size: int = Field(default=256, ge=1)
    shard_maxcount: int = Field(default=10000, ge=1)
    recon_metrics: bool = True  # also decode the tokens to report reconstruction PSNR per split


# The broad data the embedded tokenizers train on besides the source's train split: every shapes domain the targets
# use (with seeds of their own, so no target image is among them) and digits. Overrides of the ``source`` block.
BROAD_DATA: dict[str, Optional[dict[str, Any]]] = {
    "textured": {"seed": 2, "shapes": {"domain": "textured", "images_per_class": 900}},
    "outlined": {"seed": 3, "shapes": {"domain": "outlined", "images_per_class": 300}},
    # carved as the target block {name: digits} is (seed 0, 20% val, 20% test), so a digits target's test is unseen
    "digits": {"name": "digits", "seed": 0, "val_fraction": 0.2, "test_fraction": 0.2},
}


class TokenizerParams(StrictModel):
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    num_threads: Optional[int] = Field(default=1, ge=1)  # torch CPU threads (null = torch's default)
    seed: int = 0
    eval_batch_size: int = Field(default=256, ge=1)
    # name -> overrides of the source block (deep-merged): datasets whose train splits the embedded tokenizers train on
    # beside the source's (stage prepare_tokenizer -> data/prepared/tokenizer/<name>/); {} = the source alone
    data: dict[str, Optional[dict[str, Any]]] = Field(default_factory=lambda: dict(BROAD_DATA))

    @field_validator("data")
    @classmethod
    def _data_names(cls, v: dict[str, Optional[dict[str, Any]]]) -> dict[str, Optional[dict[str, Any]]]:
        for name, over in v.items():
            if not _NAME.match(str(name)):
                raise ValueError(f"{name!r}: the name must match {_NAME.pattern} (it becomes a folder name)")
            if over is not None and not isinstance(over, dict):
                raise ValueError(f"{name}: must be a mapping of overrides of the source block (got {over!r})")
        return v

    def data_block(self, name: str, source: Any) -> Any:
        """The DatasetParams of entry ``name`` of ``data``: its overrides deep-merged over the ``source`` block."""
        from ..datasets.params import merged_dataset_block

        if name not in self.data:
            raise KeyError(f"no tokenizer dataset {name!r}; params tokenizer.data has: {', '.join(self.data) or '(none)'}")
        return merged_dataset_block(source, self.data[name], f"data.{name}", f"tokenizer.data.{name}")
    vqgan: VQGANParams = VQGANParams()
    msvq: MSVQParams = MSVQParams()
    tokenize: TokenizeParams = TokenizeParams()
