"""DVC stages `pretrain_clip` and `pretrain_clip_vit`: train the embedded default's tiny open_clip model on the source
domain's images and captions; zero-shot accuracy on the source (and, when given, target) val splits -> metrics.json.

``--block clip`` (stage `pretrain_clip`): the top-level ``clip`` block, the CLIP of MVP's loss and of scoring.
``--block classify`` (stage `pretrain_clip_vit`): ``classify.clip``, the CLIP ViT that the classification methods
(PGN, IIP, ...) adapt. Either way a model that is not one of genvpt's own configs (``ViT-B-32`` with a weights file),
or an own config whose ``pretrained`` names a file other than ``<out>/model.pt``, is imported and evaluated instead
of trained: no training when params name a checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from genvpt.config import load_params
from genvpt.faults import run_stage
from genvpt.logs import setup_logging


def classify_clip_params(params, out: str | Path):
    """(ClipParams, import?) of ``classify.clip`` for the stage writing ``out``; null = the top-level block's model,
    which must then be a real checkpoint (its tiny embedded CNN is pretrain_clip's own output)."""
    from genvpt.clip.model import is_own_config

    cp = params.classify.clip
    if cp is None:
        cp = params.clip
        if is_own_config(cp.model):
            raise ValueError(
                f"classify.clip is null, so the classification methods would adapt the top-level clip block's "
                f"{cp.model!r}, the file pretrain_clip trains ({cp.pretrained}). Set classify.clip (e.g. model: "
                f"genvpt-tiny-vit, pretrained: data/clip-vit/model.pt) or point clip at a real CLIP file.")
        return cp, True
    own_output = Path(cp.pretrained) == Path(out) / "model.pt"
    return cp, not (is_own_config(cp.model) and own_output)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True, help="prepared source-domain folder (training data)")
    ap.add_argument("--target", default=None, help="prepared target folder (its val split is only evaluated)")
    ap.add_argument("--out", required=True, help="output folder: model.pt, metrics.json, loss.csv")
    ap.add_argument("--block", choices=("clip", "classify"), default="clip",
                    help="params block: clip (the scoring CLIP) or classify (classify.clip, the ViT PGN adapts)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    ap.add_argument("--steps", type=int, default=None, help="override clip.train.steps (quick checks)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    from genvpt.clip.pretrain import import_clip, pretrain_clip

    template = params.caption.sentence_template
    if args.block == "classify":
        cp, imported = classify_clip_params(params, args.out)
        if imported:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            return import_clip(args.source, args.out, cp, target_dir=args.target, sentence_template=template)
    else:
        cp = params.clip
    return pretrain_clip(args.source, args.out, cp, seed=params.seed, target_dir=args.target,
                         sentence_template=template, steps=args.steps)


if __name__ == "__main__":
    run_stage(main)
