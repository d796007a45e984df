"""DVC stage `sample`: N seeded images per class from every model configuration in params (`sample.configs`)
-> data/samples/<config>/images/*.png + record.json (sampling time per image, peak memory)."""
from __future__ import annotations

import argparse

from genvpt.config import load_params
from genvpt.datasets.shards import read_classes
from genvpt.logs import setup_logging
from genvpt.sampling import run_sampling


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", required=True, help="prepared target dataset (its classes.json names the classes)")
    ap.add_argument("--out", required=True, help="output folder; one sub-folder per configuration, each atomic")
    ap.add_argument("--config", action="append", default=None, help="sample only this configuration (repeatable)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    return run_sampling(params.sample, read_classes(args.target), args.out, only=args.config, full_params=params)


if __name__ == "__main__":
    main()
