"""``transformers`` backend: BLIP-2 captions through ``Blip2ForConditionalGeneration`` + ``Blip2Processor``.

``caption.model`` is a Hugging Face id (``Salesforce/blip2-opt-2.7b``; needs the hub or a populated cache) or a
local ``save_pretrained`` directory holding both the model and the processor. Beam search (``num_beams``) with
``max_new_tokens`` / ``min_new_tokens``; an optional text ``prompt`` follows the image tokens.

The decoder-only language model's ``generate`` returns its whole input first (``num_query_tokens`` ``<image>``
tokens, BOS, then the prompt's tokens), so that prefix is cut off before decoding: captions never contain the
prompt. (Encoder-decoder BLIP-2s, e.g. Flan-T5, return only new tokens.)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch

from .params import CaptionParams
from .run import MissingWeightsError, Sample, Sink

log = logging.getLogger(__name__)

__all__ = ["TransformersBlip2", "resolve_model_source", "how_to_provide"]


def how_to_provide(model: str) -> str:
    example = model if "/" in model and not Path(model).is_absolute() else "Salesforce/blip2-opt-2.7b"
    local = "models/" + example.split("/")[-1]
    return (
        f"on a machine with network access run `huggingface-cli download {example} --local-dir {local}` "
        f"(or `Blip2ForConditionalGeneration.from_pretrained(id).save_pretrained(dir)` plus the same for "
        f"`Blip2Processor`), copy the folder here and set caption.model: {local}; or use caption.backend: dataset "
        f"(the dataset's own captions)"
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or model.endswith(("/", os.sep)) or "\\" in model


def resolve_model_source(model: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, is it a local directory). Raises MissingWeightsError for bad local paths."""
    p = Path(model).expanduser()
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise MissingWeightsError(
                f"BLIP-2 weights not found: caption.model = {model!r} exists but is not a save_pretrained directory "
                f"(no config.json in it). To provide them: {how_to_provide(model)}."
            )
        return str(p), True
    if _looks_like_path(model):
        raise MissingWeightsError(
            f"BLIP-2 weights not found: caption.model = {model!r} is not an existing directory "
            f"(looked for {p.resolve()}). To provide them: {how_to_provide(model)}."
        )
    return model, False


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class TransformersBlip2:
    """Loads lazily (on the first ``caption`` call), so constructing it never touches the network."""

    def __init__(self, params: CaptionParams):
        from ..clip import resolve_device

        self.params = params
        self.device = resolve_device(params.device)
        self.dtype = _dtype(params.dtype, self.device)
        self.captioner = f"transformers:{params.model}"
        self.settings = {
            "prompt": params.prompt,
            "num_beams": params.num_beams,
            "max_new_tokens": params.max_new_tokens,
            "min_new_tokens": params.min_new_tokens,
            "repetition_penalty": params.repetition_penalty,
            "length_penalty": params.length_penalty,
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        self.model = None
        self.processor = None

    def load(self) -> None:
        if self.model is not None:
            return
        import transformers
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        src, local = resolve_model_source(self.params.model)
        kw = {"local_files_only": self.params.local_files_only or local}
        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        try:
            self.processor = Blip2Processor.from_pretrained(src, **kw)
            model = Blip2ForConditionalGeneration.from_pretrained(src, **{dtype_kw: self.dtype}, **kw)
        except (OSError, ValueError) as err:  # OSError: not on the hub / not cached / offline; ValueError: bad id
            where = f"local directory {src}" if local else (
                f"Hugging Face id {src!r} (local_files_only={kw['local_files_only']}, cache {_hf_cache()})"
            )
            raise MissingWeightsError(
                f"BLIP-2 weights could not be loaded from {where}: {str(err).splitlines()[0]}. "
                f"To provide them: {how_to_provide(self.params.model)}."
            ) from err
        if getattr(model.config, "image_token_index", None) is None:
            raise MissingWeightsError(
                f"{src}: the BLIP-2 config has no image_token_index (saved by transformers < 4.45); re-save it with a "
                f"current transformers (processor and model) so the processor inserts the image tokens"
            )
        self.model = model.to(self.device).eval()
        log.info("loaded BLIP-2 %s on %s (%s)", src, self.device, self.dtype)

    @torch.inference_mode()
    def generate(self, images: list) -> list[str]:
        """Captions of a batch of PIL images (prompt tokens stripped)."""
        self.load()
        p, model, proc = self.params, self.model, self.processor
        if p.prompt:
            enc = proc(images=images, text=[p.prompt] * len(images), return_tensors="pt")
            n_prefix = enc["input_ids"].shape[1]
        else:
            enc = proc(images=images, return_tensors="pt")
            n_prefix = model.config.num_query_tokens + 1  # generate() starts from <image> x num_query_tokens + BOS
        if model.config.text_config.is_encoder_decoder:
            n_prefix = 0
        enc = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)) for k, v in enc.items()}
        out = model.generate(
            **enc,
            num_beams=p.num_beams,
            max_new_tokens=p.max_new_tokens,
            min_new_tokens=p.min_new_tokens,
            repetition_penalty=p.repetition_penalty,
            length_penalty=p.length_penalty,
            do_sample=False,
        )
        return [t.strip() for t in proc.batch_decode(out[:, n_prefix:], skip_special_tokens=True)]

    def caption(self, prepared_dir: Path, todo: Sequence[Sample], sink: Sink) -> None:
        from tqdm import tqdm

        from ..datasets.shards import iter_split

        self.load()
        want: dict[str, set[str]] = {}
        for s in todo:
            want.setdefault(s.split, set()).add(s.key)
        bar = tqdm(total=len(todo), desc="caption", unit="img", mininterval=5.0)
        bs = self.params.batch_size
        for split, keys in want.items():
            batch_keys, batch_imgs = [], []
            for rec in iter_split(prepared_dir, split):
                if rec["key"] not in keys:
                    continue
                batch_keys.append(rec["key"])
                batch_imgs.append(rec["image"])
                if len(batch_keys) == bs:
                    sink(list(zip(batch_keys, self.generate(batch_imgs))))
                    bar.update(len(batch_keys))
                    batch_keys, batch_imgs = [], []
            if batch_keys:
                sink(list(zip(batch_keys, self.generate(batch_imgs))))
                bar.update(len(batch_keys))
        bar.close()


def _hf_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return "~/.cache/huggingface/hub"
