"""LAVIS BLIP-2 caption worker: runs inside the separate LAVIS environment (``make lavis-env`` -> .venv-lavis).

Called by genvpt/captions/lavis_backend.py as a subprocess; it needs only the standard library, torch, PIL and
LAVIS (no genvpt import, no pyarrow), because the LAVIS environment pins old libraries.

    python lavis_worker.py --check
    python lavis_worker.py --shards a.tar b.tar --keys keys.txt --out out.jsonl [generation options]

Reads the PNGs of the listed keys straight from the prepared WebDataset shards (plain tar files: ``<key>.png``),
captions them in batches and appends one JSON line ``{"key": ..., "caption": ...}`` per image to ``--out``,
flushed and fsynced after every batch, so the parent can pick up finished captions while it runs and after a crash.
Exit codes: 0 done, 3 weights missing (message on stderr), 4 LAVIS not importable, 1 anything else.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile

EXIT_MISSING_WEIGHTS = 3
EXIT_NO_LAVIS = 4


def _log(msg: str) -> None:
    print(f"[lavis_worker] {msg}", file=sys.stderr, flush=True)


def check() -> int:
    try:
        import lavis  # noqa: F401
        import torch
        import transformers
        from lavis.models import load_model_and_preprocess  # noqa: F401
    except Exception as err:  # ImportError and the version clashes LAVIS is known for
        _log(f"LAVIS does not import in {sys.executable}: {type(err).__name__}: {err}")
        return EXIT_NO_LAVIS
    from importlib.metadata import version

    print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                      "salesforce-lavis": version("salesforce-lavis")}))
    return 0


def iter_shard_images(shards: list[str], keys: set[str]):
    """(key, PIL image) for the wanted keys, in shard order."""
    from PIL import Image

    for shard in shards:
        with tarfile.open(shard) as tf:
            for member in tf:
                if not member.isfile() or not member.name.endswith(".png"):
                    continue
                base = os.path.basename(member.name)
                key = base.split(".", 1)[0]
                if key not in keys:
                    continue
                data = tf.extractfile(member).read()
                img = Image.open(io.BytesIO(data))
                img.load()
                yield key, img.convert("RGB")


def load_model(args):
    import torch
    from lavis.models import load_preprocess, registry
    from omegaconf import OmegaConf

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_cls = registry.get_model_class(args.name)
    if model_cls is None:
        raise SystemExit(f"LAVIS has no model named {args.name!r}")
    cfg = OmegaConf.load(model_cls.default_config_path(args.model_type))
    if args.checkpoint:
        if not os.path.isfile(args.checkpoint):
            raise FileNotFoundError(f"caption.lavis.checkpoint {args.checkpoint!r} does not exist")
        key = "finetuned" if cfg.model.get("load_finetuned", True) else "pretrained"
        cfg.model[key] = args.checkpoint
    model = model_cls.from_config(cfg.model)
    model.eval()
    if device == "cpu":
        model = model.float()
    vis_processors, _ = load_preprocess(cfg.preprocess)
    return model.to(device), vis_processors["eval"], device, cfg


def run(args) -> int:
    try:
        import lavis  # noqa: F401  (first: fails fast where LAVIS is missing)
        import torch
    except Exception as err:
        _log(f"LAVIS does not import in {sys.executable}: {type(err).__name__}: {err}")
        return EXIT_NO_LAVIS
    with open(args.keys, encoding="utf-8") as fh:
        keys = {line.strip() for line in fh if line.strip()}
    _log(f"{len(keys)} images to caption with {args.name}/{args.model_type}")
    try:
        model, vis, device, cfg = load_model(args)
    except ImportError as err:
        _log(f"LAVIS does not import: {err}")
        return EXIT_NO_LAVIS
    except Exception as err:  # downloads fail offline: URLError, OSError, HTTPError, HF errors, RuntimeError
        urls = _weight_sources(args)
        _log(
            "MISSING_WEIGHTS: LAVIS could not load "
            f"{args.name}/{args.model_type}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            f"It needs: {json.dumps(urls)}"
        )
        return EXIT_MISSING_WEIGHTS
    gen_kw = dict(
        use_nucleus_sampling=args.nucleus, num_beams=args.num_beams, max_length=args.max_length,
        min_length=args.min_length, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        length_penalty=args.length_penalty, num_captions=1,
    )
    done = 0
    with open(args.out, "a", encoding="utf-8") as out, torch.inference_mode():
        batch_keys, batch_imgs = [], []

        def flush():
            nonlocal done
            x = torch.stack([vis(im) for im in batch_imgs]).to(device)
            samples = {"image": x}
            if args.prompt:
                samples["prompt"] = args.prompt
            caps = model.generate(samples, **gen_kw)
            for k, c in zip(batch_keys, caps):
                if args.prompt and c.startswith(args.prompt):
                    c = c[len(args.prompt):].strip()
                out.write(json.dumps({"key": k, "caption": c}) + "\n")
            out.flush()
            os.fsync(out.fileno())
            done += len(batch_keys)
            batch_keys.clear()
            batch_imgs.clear()

        for key, img in iter_shard_images(args.shards, keys):
            batch_keys.append(key)
            batch_imgs.append(img)
            if len(batch_keys) == args.batch_size:
                flush()
        if batch_keys:
            flush()
    _log(f"captioned {done} images")
    return 0


def _weight_sources(args) -> dict:
    """Where LAVIS fetches the weights of blip2_opt models from (for the missing-weights message)."""
    out = {"checkpoint": args.checkpoint or "the 'finetuned'/'pretrained' URL of LAVIS's model config (torch hub cache, $TORCH_HOME)"}
    try:
        from lavis.models import registry
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(registry.get_model_class(args.name).default_config_path(args.model_type)).model
        if not args.checkpoint:
            out["checkpoint"] = cfg.get("finetuned") if cfg.get("load_finetuned", True) else cfg.get("pretrained")
        out["vision_encoder"] = f"{cfg.get('vit_model', 'eva_clip_g')} (EVA ViT-g weights, downloaded by LAVIS into the torch hub cache)"
        out["qformer_tokenizer"] = "bert-base-uncased (Hugging Face id, LAVIS's Q-Former tokenizer; needs the hub or $HF_HOME cache)"
        if cfg.get("opt_model"):
            out["language_model"] = f"{cfg.get('opt_model')} (Hugging Face id; needs the hub or $HF_HOME cache)"
    except Exception:
        pass
    return out


# the models this worker runs (genvpt.captions.params.LAVIS_MODELS holds the same list; a test keeps them equal)
LAVIS_MODELS = {
    "blip2_opt": ("pretrain_opt2.7b", "pretrain_opt6.7b", "caption_coco_opt2.7b", "caption_coco_opt6.7b"),
}


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _validate(ap: argparse.ArgumentParser, args) -> None:
    """Every argument checked before anything is loaded: existing files, an allowed model, numbers in range."""
    if args.model_type not in LAVIS_MODELS.get(args.name, ()):
        ap.error(f"--model-type {args.model_type!r} is not a type of {args.name!r}; allowed: "
                 f"{', '.join(LAVIS_MODELS.get(args.name, ()))}")
    for shard in args.shards:
        if not os.path.isfile(shard):
            ap.error(f"--shards: {shard!r} is not a file")
    if not os.path.isfile(args.keys):
        ap.error(f"--keys: {args.keys!r} is not a file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        ap.error(f"--out: the folder of {args.out!r} does not exist")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        ap.error(f"--checkpoint: {args.checkpoint!r} is not a file")
    if not 0.0 < args.top_p <= 1.0:
        ap.error(f"--top-p must lie in (0, 1], got {args.top_p}")
    if args.repetition_penalty <= 0:
        ap.error(f"--repetition-penalty must be positive, got {args.repetition_penalty}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that LAVIS imports; print versions")
    ap.add_argument("--shards", nargs="*", default=[])
    ap.add_argument("--keys")
    ap.add_argument("--out")
    ap.add_argument("--name", default="blip2_opt", choices=sorted(LAVIS_MODELS))
    ap.add_argument("--model-type", default="caption_coco_opt2.7b",
                    choices=sorted({t for types in LAVIS_MODELS.values() for t in types}))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=_positive, default=8)
    ap.add_argument("--prompt", default="")
    ap.add_argument("--num-beams", type=_positive, default=5)
    ap.add_argument("--max-length", type=_positive, default=30)
    ap.add_argument("--min-length", type=_count, default=1)
    ap.add_argument("--nucleus", action="store_true")
    ap.add_argument("--top-p", type=_finite, default=0.9)
    ap.add_argument("--repetition-penalty", type=_finite, default=1.0)
    ap.add_argument("--length-penalty", type=_finite, default=1.0)
    args = ap.parse_args(argv)
    if args.check:
        return check()
    if not (args.shards and args.keys and args.out):
        ap.error("--shards, --keys and --out are required unless --check")
    _validate(ap, args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
