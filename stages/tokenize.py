"""Stage ``tokenize@<family>-<domain>``: a prepared dataset -> token shards with a tokenizer.

Reads every split the prepared dataset holds, ``data/prepared/<domain>/{train,val,test}`` (WebDataset shards of PNGs;
the source has no test split), encodes every image with the tokenizer file (``data/tokenizers/<family>/model.pt``),
batched under ``torch.inference_mode()``, and writes the same splits to
``data/tokens/<family>/<domain>/<split>/shard-*.tar`` + ``meta.json`` + ``classes.json`` (layout in
``genvpt/tokenizers/token_shards.py``; meta.json records each shard's sample count and sha256, which the readers
verify), plus a metrics json (throughput; reconstruction PSNR and codebook usage
per split).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genvpt.config import load_params
from genvpt.datasets.shards import load_split, present_splits, read_classes
from genvpt.io import atomic_dir, sha256_file, write_json
from genvpt.faults import run_stage
from genvpt.logs import setup_logging
from genvpt.tokenizers import FAMILIES, decode_tokens, encode_tokens, load_tokenizer, token_grid
from genvpt.tokenizers.token_shards import token_shard_index, write_token_split
from genvpt.tokenizers.train import codebook_stats, psnr_uint8, resolve_device, to_float, to_uint8

log = logging.getLogger("stages.tokenize")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def tokenize_split(model, images: torch.Tensor, *, batch_size: int, device: torch.device, recon: bool,
                   desc: str = "tokenize", progress: bool = True) -> dict:
    """Encode uint8 images [N, 3, H, W] in batches; returns tokens per scale (CPU LongTensors [N, n_k]) and timings."""
    scales: list[list[torch.Tensor]] = []
    psnrs: list[torch.Tensor] = []
    enc_s = dec_s = 0.0
    for i in tqdm(range(0, images.shape[0], batch_size), desc=desc, disable=not progress, leave=False):
        real = images[i:i + batch_size]
        x = to_float(real.to(device, non_blocking=True))
        t0 = time.perf_counter()
        toks = encode_tokens(model, x)
        _sync(device)
        enc_s += time.perf_counter() - t0
        if not scales:
            scales = [[] for _ in toks]
        for acc, t in zip(scales, toks):
            acc.append(t.cpu())
        if recon:
            t0 = time.perf_counter()
            y = decode_tokens(model, toks)
            _sync(device)
            dec_s += time.perf_counter() - t0
            psnrs.append(psnr_uint8(to_uint8(y).cpu(), real))
    out = {"scales": [torch.cat(s) for s in scales], "encode_seconds": enc_s, "decode_seconds": dec_s}
    if psnrs:
        out["psnr"] = torch.cat(psnrs)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, choices=FAMILIES)
    ap.add_argument("--tokenizer", default=None, help="tokenizer file (default data/tokenizers/<family>/model.pt)")
    ap.add_argument("--data", required=True, help="prepared dataset folder (data/prepared/<domain>)")
    ap.add_argument("--out", required=True, help="token folder (data/tokens/<family>/<domain>)")
    ap.add_argument("--metrics", default=None, help="metrics json (default <out>-metrics.json)")
    ap.add_argument("--params", default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    tp = params.tokenizer.tokenize
    device = resolve_device(params.tokenizer.device)
    tok_path = Path(args.tokenizer or f"data/tokenizers/{args.family}/model.pt")
    data, out = Path(args.data), Path(args.out)
    metrics_path = Path(args.metrics) if args.metrics else out.parent / f"{out.name}-metrics.json"
    progress = not args.no_progress
    if params.tokenizer.num_threads:
        torch.set_num_threads(params.tokenizer.num_threads)

    model = load_tokenizer(tok_path, family=args.family, device=device)
    class_names = read_classes(data)
    metrics: dict = {"family": args.family, "tokenizer": str(tok_path), "data": str(data), "device": str(device)}
    counts: dict[str, int] = {}
    shards: dict[str, dict] = {}  # per split: {shard file: {count, sha256}}, verified by iter_tokens
    grid: list[int] | None = None
    # every split the prepared folder holds; train always (load_split names the folder when it is missing)
    splits = ["train"] + [s for s in present_splits(data) if s != "train"]
    with atomic_dir(out) as tmp:
        for split in splits:
            sd = load_split(data, split)
            image_size = int(sd.images.shape[-1])
            if grid is None:
                grid = token_grid(model, image_size)
            res = tokenize_split(model, sd.images, batch_size=tp.batch_size, device=device, recon=tp.recon_metrics,
                                 desc=f"tokenize {data.name}/{split}", progress=progress)
            got = [round(s.shape[1] ** 0.5) for s in res["scales"]]
            if got != grid:
                raise ValueError(f"{data}/{split}: images of {image_size} px give token grids {got}, expected {grid}")
            n = len(sd)
            samples = (
                {
                    "key": sd.keys[i], "label": int(sd.labels[i]), "class_name": class_names[int(sd.labels[i])],
                    "caption": sd.captions[i], "scales": [s[i].numpy() for s in res["scales"]],
                }
                for i in range(n)
            )
            counts[split] = write_token_split(samples, tmp / split, vocab_size=model.n_embed, maxcount=tp.shard_maxcount)
            shards[split] = token_shard_index(tmp / split)
            enc_rate = n / max(res["encode_seconds"], 1e-9)
            log.info("%s/%s: %d images -> %s tokens each; encode %.0f images/s", data.name, split, n,
                     "+".join(str(g * g) for g in grid), enc_rate)
            m: dict = {"images": n, "encode_images_per_s": round(enc_rate, 1)}
            V = model.n_embed
            all_counts = sum(s.flatten().bincount(minlength=V) for s in res["scales"])
            m.update({f"codebook_{k}": v for k, v in codebook_stats(all_counts).items()})
            if "psnr" in res:
                m["psnr"] = res["psnr"].mean().item()
                m["decode_images_per_s"] = round(n / max(res["decode_seconds"], 1e-9), 1)
                log.info("%s/%s: reconstruction PSNR %.2f dB; decode %.0f images/s", data.name, split, m["psnr"],
                         m["decode_images_per_s"])
            metrics[split] = m
        shutil.copyfile(data / "classes.json", tmp / "classes.json")
        write_json(tmp / "meta.json", {
            "family": args.family,
            "grid": grid,
            "vocab_size": model.n_embed,
            "tokens_per_image": sum(g * g for g in grid),
            "counts": counts,
            "shards": shards,
            "class_names": class_names,
            "tokenizer": str(tok_path),
            "tokenizer_sha256": sha256_file(tok_path),
            "data": str(data),
        })
    write_json(metrics_path, metrics)
    log.info("wrote %s and %s", out, metrics_path)


if __name__ == "__main__":
    run_stage(main)
