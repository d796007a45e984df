"""DVC stage `score`: every sample set (data/samples/<row>/seed-<s>/) of every report row against the target's real
images -> scores/metrics.parquet (one row per sample set), summary.parquet (one row per report row: mean, std over
seeds, n_seeds), metrics/<row>/metrics.json (DVC metrics: means and stds), definitions.json and fd_vs_params.csv
(DVC plot). The rows: the frozen generator families, then the adaptation configurations (report_rows). With
metrics.texture_share on (auto: a shapes target in the textured domain), each set also gets texture_share. With
metrics.class_judge, the classifier trained by classify@<config>-<dataset> (<classify>/<dataset>/<config>/, on the
CLIP ViT of classify.clip) judges every sample's class beside the linear probe."""
from __future__ import annotations

import argparse

from pathlib import Path

from genvpt.config import load_params
from genvpt.faults import run_stage
from genvpt.logs import setup_logging
from genvpt.metrics.scoring import load_scoring_clip, report_rows, score_sample_sets


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", required=True, help="folder of sample sets (written by the sample stage)")
    ap.add_argument("--target", required=True, help="prepared target dataset")
    ap.add_argument("--clip", default=None, help="CLIP model file (default: the one params name)")
    ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="score the rows that have sample sets and list the others as missing (a partial run; "
                         "the DVC stage never passes it)")
    ap.add_argument("--classify", default="data/classify",
                    help="folder of the classify@ stages' outputs (<dataset>/<config>/): metrics.class_judge's")
    ap.add_argument("--judge-clip", default=None,
                    help="the CLIP file the judge was trained on (default: classify.clip's pretrained file)")
    args = ap.parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    clip = load_scoring_clip(params, args.clip)
    judge = None
    jp = params.metrics.class_judge
    if jp is not None and params.metrics.class_accuracy:
        from genvpt.metrics.judge import load_class_judge
        from genvpt.classify.run import classify_clip_block
        from genvpt.training import resolve_device

        judge = load_class_judge(Path(args.classify) / jp.dataset / jp.config,
                                 classify_clip_block(params, args.judge_clip), seed=jp.seed,
                                 device=resolve_device(params.metrics.device, "metrics.device"),
                                 batch_size=params.metrics.batch_size)
    return score_sample_sets(report_rows(params), params.metrics, args.samples, args.target, args.out,
                             clip_model=clip, default_text_template=params.caption.sentence_template,
                             dataset_params=params.dataset, allow_missing=args.allow_missing, class_judge=judge)


if __name__ == "__main__":
    run_stage(main)
