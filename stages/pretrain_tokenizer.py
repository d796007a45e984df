"""Stage ``pretrain_tokenizer@<family>``: the tokenizer of one family (vqgan | msvq) -> data/tokenizers/<family>/.

* ``tokenizer.<family>.checkpoint`` null (the embedded default): trains the tiny tokenizer on the source domain's
  train split and the train splits of the broad data ``tokenizer.data`` names (``--data``: stage prepare_tokenizer's
  folder), as the papers' tokenizers are trained on broad data and only the generators on the source (resumable:
  ``train_state.pt`` next to the outputs, removed when training finishes).
* ``tokenizer.<family>.checkpoint`` set: nothing is trained; the official file is loaded strictly (sizes read
  from it), evaluated on the source val split and saved as ``model.pt``, so every later stage reads one format.

Outputs: ``model.pt`` (genvpt.checkpoint.save_model format), ``metrics.json`` (PSNR, codebook usage and perplexity,
per scale for msvq, on source val; ``psnr_by_data``: PSNR on each broad dataset's val split; training time), ``recon.png`` (originals / reconstructions), ``curve.csv`` (training losses).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from genvpt.config import load_params
from genvpt.datasets.shards import load_split
from genvpt.io import sha256_file, write_json
from genvpt.faults import run_stage
from genvpt.logs import setup_logging
from genvpt.tokenizers import FAMILIES, load_pretrained_msvq, load_pretrained_vqgan, save_tokenizer
from genvpt.tokenizers.train import (
    build_model,
    check_patch_nums,
    evaluate_tokenizer,
    model_config,
    reconstruction_grid,
    resolve_device,
    train_tokenizer,
    zero_init_residuals,
)
from genvpt.training import count_parameters, peak_memory_mb, seed_everything, write_curve

log = logging.getLogger("stages.pretrain_tokenizer")


def _fingerprint(family: str, fparams, seed: int, folders: list[Path]) -> str:
    data = []
    for folder in folders:
        manifest = folder / "manifest.parquet"
        data.append(sha256_file(manifest) if manifest.is_file() else str(folder.resolve()))
    blob = json.dumps({"family": family, "params": fparams.model_dump(), "seed": seed, "data": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def broad_data_folders(names: list[str], root: Path) -> dict[str, Path]:
    """The prepared folder of every ``tokenizer.data`` entry under ``root``; an error names what is missing."""
    listed = root / "datasets.json"
    if names and not listed.is_file():
        raise FileNotFoundError(f"{listed} is missing: run stage prepare_tokenizer (params tokenizer.data names "
                                f"{', '.join(names)})")
    have = json.loads(listed.read_text())["datasets"] if listed.is_file() else []
    missing = [n for n in names if n not in have]
    if missing:
        raise FileNotFoundError(f"{root} lacks tokenizer.data entries {missing} (it has {have}): rerun prepare_tokenizer")
    return {n: root / n for n in names}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, choices=FAMILIES)
    ap.add_argument("--source", default="data/prepared/source", help="prepared source-domain dataset")
    ap.add_argument("--data", default="data/prepared/tokenizer",
                    help="stage prepare_tokenizer's folder: the broad datasets params tokenizer.data names")
    ap.add_argument("--out", default=None, help="output folder (default data/tokenizers/<family>)")
    ap.add_argument("--params", default=None, help="params file (default params.yaml)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    tp_all = params.tokenizer
    fp = getattr(tp_all, args.family)
    out = Path(args.out or f"data/tokenizers/{args.family}")
    source = Path(args.source)
    device = resolve_device(tp_all.device)
    progress = not args.no_progress
    if tp_all.num_threads:
        torch.set_num_threads(tp_all.num_threads)

    val = load_split(source, "val")
    image_size = int(val.images.shape[-1])
    meta: dict = {"image_size": image_size, "trained_on": str(source), "device": str(device)}
    curve: list[dict] = []
    if fp.checkpoint:
        log.info("tokenizer.%s.checkpoint is set: importing %s (no training)", args.family, fp.checkpoint)
        if args.family == "vqgan":
            model = load_pretrained_vqgan(fp.checkpoint, resolution=image_size)
        else:
            model = load_pretrained_msvq(fp.checkpoint, patch_nums=fp.patch_nums)
            check_patch_nums(model.config, image_size)
        meta.update(imported_from=str(fp.checkpoint), checkpoint_sha256=sha256_file(fp.checkpoint))
        train_info = {"imported": True}
    else:
        broad = broad_data_folders(list(tp_all.data), Path(args.data))
        parts = [load_split(source, "train").images]
        for name, folder in broad.items():
            images = load_split(folder, "train").images
            if images.shape[1:] != parts[0].shape[1:]:
                raise ValueError(f"tokenizer.data.{name}: images of shape {tuple(images.shape[1:])} in {folder}, the "
                                 f"source's are {tuple(parts[0].shape[1:])} (set the same image_size)")
            parts.append(images)
        train_images = torch.cat(parts)
        meta["trained_on"] = [str(source), *(str(f) for f in broad.values())]
        seed_everything(tp_all.seed)
        model = build_model(args.family, model_config(args.family, fp, image_size))
        if fp.train.zero_init_residual:
            zero_init_residuals(model)
        log.info("training %s tokenizer (%.2f M parameters) on %d images of %d px (source %d, %s) for %d steps on %s",
                 args.family, count_parameters(model) / 1e6, len(train_images), image_size, len(parts[0]),
                 ", ".join(f"{n} {len(x)}" for n, x in zip(broad, parts[1:])) or "no broad data", fp.train.steps,
                 device)
        res = train_tokenizer(
            model, train_images, fp.train, seed=tp_all.seed, device=device, state_path=out / "train_state.pt",
            fingerprint=_fingerprint(args.family, fp, tp_all.seed, [source, *broad.values()]), progress=progress,
        )
        curve = res.history
        imgs_seen = (res.steps_run * min(fp.train.batch_size, len(train_images)))
        train_info = {
            "imported": False,
            "train_seconds": round(res.seconds, 2),
            "train_cpu_seconds": round(res.cpu_seconds, 2),
            "torch_threads": torch.get_num_threads(),
            "load_average_1m": round(os.getloadavg()[0], 2),  # other processes sharing the CPU inflate the time
            "train_images_per_s": round(imgs_seen / max(res.seconds, 1e-9), 1),
            "steps": fp.train.steps,
            "train_images": {"source": len(parts[0]), **{n: len(x) for n, x in zip(broad, parts[1:])}},
            "resumed_from_step": res.resumed_from,
            "final_recon_loss": curve[-1]["recon"] if curve else None,
        }
        log.info("trained in %.1f s (%.0f images/s)", res.seconds, train_info["train_images_per_s"])

    t0 = time.perf_counter()
    metrics = evaluate_tokenizer(model, val.images, batch_size=tp_all.eval_batch_size, device=device, progress=progress)
    metrics.update(train_info)
    metrics.update(
        split="source/val",
        eval_seconds=round(time.perf_counter() - t0, 2),
        parameters=count_parameters(model),
        peak_memory_mb=round(peak_memory_mb(device), 1),
    )
    log.info("%s on source val: PSNR %.2f dB, codebook usage %.1f%%, perplexity %.1f", args.family,
             metrics["psnr"], 100 * metrics["codebook_usage"], metrics["perplexity"])
    if not fp.checkpoint:
        metrics["psnr_by_data"] = {}
        for name, folder in broad.items():
            r = evaluate_tokenizer(model, load_split(folder, "val").images, batch_size=tp_all.eval_batch_size,
                                   device=device, progress=False)
            metrics["psnr_by_data"][name] = round(float(r["psnr"]), 3)
        log.info("%s PSNR on the broad data's val splits: %s", args.family, metrics["psnr_by_data"])

    save_tokenizer(out / "model.pt", model.cpu(), **meta)
    reconstruction_grid(model, val.images, out / "recon.png", device=device)
    write_curve(out / "curve.csv", curve or [{"step": 0, "recon": None, "vq": None, "loss": None}])
    write_json(out / "metrics.json", metrics)
    state = out / "train_state.pt"
    if state.exists():
        state.unlink()
    log.info("wrote %s", out)


if __name__ == "__main__":
    run_stage(main)
