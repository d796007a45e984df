"""DVC stage `train_prompt` (one instance per configuration in params `prompts.configs`): train one prompt method on
the frozen VAR with the target domain's tokens -> data/prompts/<config>/ (model.pt, record.json, curve.csv)."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.logs import setup_logging
from genvpt.prompts.run import run_train_prompt


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True, help="name of the configuration in params prompts.configs")
    ap.add_argument("--tokens", required=True, help="token shards of the target domain (tokenize stage output)")
    ap.add_argument("--generator", required=True, help="the frozen VAR model file")
    ap.add_argument("--tokenizer", required=True, help="VAR's multi-scale VQ-VAE model file")
    ap.add_argument("--clip", default=None, help="CLIP model file (default: the one params name)")
    ap.add_argument("--captions", default=None, help="captions.parquet of the target domain (default: captions in the tokens)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    return run_train_prompt(params, args.config, tokens=args.tokens, generator=args.generator,
                            tokenizer=args.tokenizer, clip=args.clip, captions=args.captions, out=args.out)


if __name__ == "__main__":
    main()
