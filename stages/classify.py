"""DVC stage `classify` (one instance per configuration in params `classify.configs` and dataset in
`classify.datasets`: classify@<config>-<dataset>): adapt the frozen CLIP ViT (stage pretrain_clip_vit) to classify
the prepared dataset (stage prepare_classify@<dataset>) with the configuration's method (PGN, IIP, VP, linear probe,
LoRA, fine-tuning or zero-shot), once per seed of `classify.seeds`: trained on the train split, top-1 on every split
of `classify.eval_splits` -> data/classify/<dataset>/<config>/seed-<s>/ (model.pt, record.json, curve.csv, and
inversion.json for the configurations `classify.inversion.configs` names) + data/classify/<dataset>/<config>.json
(mean, std and per-seed top-1 per split, trainable parameters, train time, peak memory, inversion) for
`dvc metrics`.

`distributed.nproc_per_node` > 1: the stage re-launches itself under torchrun and trains on that many processes (the
same global batch; rank 0 writes the outputs; genvpt/distributed.py)."""
from __future__ import annotations

import argparse

from genvpt import distributed
from genvpt.config import load_params
from genvpt.faults import run_stage
from genvpt.logs import setup_logging


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True, help="name of the configuration in params classify.configs")
    ap.add_argument("--dataset", default="target", help="the name in params classify.datasets (the table's column)")
    ap.add_argument("--data", required=True, help="prepared dataset folder (train / val / test splits)")
    ap.add_argument("--clip", default=None, help="CLIP model file (default: the one params classify.clip names)")
    ap.add_argument("--out", required=True, help="output folder (one seed-<s>/ sub-folder per seed)")
    ap.add_argument("--summary", default=None, help="JSON written with the mean, spread and per-seed numbers")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    if distributed.relaunch_under_torchrun(params.distributed, "stages.classify", argv):
        return {}  # torchrun ran the stage (called from Python with argv)
    from genvpt.classify.run import run_classify

    with distributed.session(params.distributed, params.classify.device):
        return run_classify(params, args.config, prepared=args.data, dataset=args.dataset, clip=args.clip,
                            out=args.out, summary=args.summary, progress=True)


if __name__ == "__main__":
    run_stage(main)
