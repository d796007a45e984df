"""Stage ``pretrain_generator@<family>``: the frozen backbone of one family (ar | maskgit | var) -> data/generators/<family>/.

* ``generator.<family>.checkpoint`` null (the embedded default): trains a tiny class-conditional model on the source
  domain's token shards (resumable: ``train_state.pt`` next to the outputs, removed when training finishes).
* ``generator.<family>.checkpoint`` set: nothing is trained; the official file is loaded strictly (sizes read from
  its shapes; a file of another family or size fails with a message naming it) and saved as ``model.pt``.

Outputs: ``model.pt``, ``loss.csv`` (DVC plot), ``samples.png`` (a row per class), ``metrics.json`` (losses, time,
parameters, images/s, class accuracy of samples under the source-domain classifier).

``distributed.nproc_per_node`` > 1: the stage re-launches itself under torchrun and trains on that many processes
(the same global batch; rank 0 writes the outputs; genvpt/distributed.py).
"""
from __future__ import annotations

import argparse

from genvpt import distributed
from genvpt.config import load_params
from genvpt.generators import FAMILIES, TOKENIZER_OF
from genvpt.generators.pretrain import pretrain_family
from genvpt.faults import run_stage
from genvpt.logs import setup_logging


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, choices=FAMILIES)
    ap.add_argument("--tokens", default=None, help="source token shards (default data/tokens/<tokenizer>/source)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer model (default data/tokenizers/<tokenizer>/model.pt)")
    ap.add_argument("--classifier", default="data/classifier/source/model.pt", help="source-domain classifier")
    ap.add_argument("--out", default=None, help="output folder (default data/generators/<family>)")
    ap.add_argument("--params", default=None, help="params file (default params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    if distributed.relaunch_under_torchrun(params.distributed, "stages.pretrain_generator", argv):
        return {}  # torchrun ran the stage (called from Python with argv)
    tok = TOKENIZER_OF[args.family]
    with distributed.session(params.distributed, params.generator.device):
        return pretrain_family(
            args.family,
            params.generator,
            tokens_dir=args.tokens or f"data/tokens/{tok}/source",
            tokenizer_path=args.tokenizer or f"data/tokenizers/{tok}/model.pt",
            out_dir=args.out or f"data/generators/{args.family}",
            classifier_path=args.classifier,
            seed=params.seed,
        )


if __name__ == "__main__":
    run_stage(main)
