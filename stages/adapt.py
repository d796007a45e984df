"""DVC stage `adapt` (one instance per configuration in params `adaptation.configs`): adapt the configuration's frozen
backbone to the target domain's tokens with its method, once per training seed of `adaptation.seeds`
-> data/adapted/<config>/seed-<s>/ (model.pt, record.json, curve.csv) + a summary over seeds for `dvc metrics`.

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
    ap.add_argument("--config", required=True, help="name of the configuration in params adaptation.configs")
    ap.add_argument("--tokens", required=True, help="token shards of the target domain (tokenize stage output)")
    ap.add_argument("--generator", required=True, help="the frozen generator's model file")
    ap.add_argument("--tokenizer", default=None, help="its tokenizer file (default: the one the tokens name)")
    ap.add_argument("--clip", default=None, help="CLIP model file (default: the one params name)")
    ap.add_argument("--captions", default=None, help="captions.parquet of the target domain (default: captions in the tokens)")
    ap.add_argument("--out", required=True, help="output folder (one seed-<s>/ sub-folder per training seed)")
    ap.add_argument("--summary", default=None, help="JSON written with the mean and spread over seeds")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    if distributed.relaunch_under_torchrun(params.distributed, "stages.adapt", argv):
        return {}  # torchrun ran the stage (called from Python with argv)
    from genvpt.adaptation.run import run_adapt

    with distributed.session(params.distributed, params.adaptation.device):
        return run_adapt(params, args.config, tokens=args.tokens, generator=args.generator, tokenizer=args.tokenizer,
                         clip=args.clip, captions=args.captions, out=args.out, summary=args.summary)


if __name__ == "__main__":
    run_stage(main)
