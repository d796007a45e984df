"""The ``train_prompt`` stage's library side: load the target tokens, texts, frozen backbone and CLIP named on the
command line / in params, and train one configuration (genvpt/prompts/train.py)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch

from ..training import resolve_device as _resolve_device
from .params import PromptConfig
from .sampler import load_var_backbone
from .train import TrainData, file_source, train_prompt

log = logging.getLogger(__name__)

__all__ = ["resolve_device", "load_train_data", "run_train_prompt"]


def resolve_device(name: str) -> torch.device:
    return _resolve_device(name, "prompts.device")


def load_train_data(tokens_dir: str | os.PathLike, captions: Optional[str | os.PathLike],
                    sentence_template: str, split: str = "train") -> TrainData:
    """The target's training tokens with their multi-level texts (genvpt/texts.py): the class sentences and each
    sample's caption from ``captions`` (captions.parquet, joined by key), or the captions stored with the tokens
    when no captions file is given."""
    from ..texts import TextBank, load_text_bank
    from ..tokenizers.token_shards import load_tokens

    td = load_tokens(tokens_dir, split)
    if captions is not None:
        bank = load_text_bank(td.class_names, captions, sentence_template)
    else:
        own = {k: c for k, c in zip(td.keys, td.captions) if c}
        log.info("no captions file: using the captions stored with the tokens (%d of %d samples)", len(own), len(td.keys))
        bank = TextBank(td.class_names, own, sentence_template, source=f"{tokens_dir} (token shards)", on_missing="sentence")
    texts = bank.texts(td.keys, td.labels)
    return TrainData(td.scales, td.labels, td.class_names, texts.caption, sentences=bank.sentences)


def run_train_prompt(params: Any, name: str, *, tokens: str, generator: str, tokenizer: str, out: str,
                     clip: Optional[str] = None, captions: Optional[str] = None) -> dict:
    cfg: PromptConfig = params.prompts.config(name)
    device = resolve_device(params.prompts.device)
    if params.prompts.num_threads:
        torch.set_num_threads(params.prompts.num_threads)
    data = load_train_data(tokens, captions, params.caption.sentence_template)
    val = None
    if (Path(tokens) / "val").is_dir():  # held-out target tokens: the record's val_ce_before / val_ce_after
        val = load_train_data(tokens, captions, params.caption.sentence_template, split="val")
    var, tok = load_var_backbone(generator, tokenizer)
    clip_model = None
    clip_path = None
    if cfg.lambda_sen > 0 or cfg.lambda_cap > 0 or cfg.text_to_image:
        from ..clip import load_clip

        clip_params = params.clip if clip is None else params.clip.model_copy(update={"pretrained": str(clip)})
        clip_path = clip_params.pretrained
        clip_model = load_clip(clip_params, device=device)
    source = file_source(generator, tokenizer, clip_path)
    return train_prompt(name, cfg, var=var, tokenizer=tok, data=data, out_dir=out, clip=clip_model, device=device,
                        source=source, val_data=val)
