"""DVC stage `extra_target@<name>` (one instance per entry of params `extra_targets`): the per-target stages rerun for
another target dataset, e.g. classes the source never had (the frozen rows cannot produce them; class-conditioned
prompts must carry them).

It writes a derived params file (params.yaml with `dataset` merged with the target's overrides and
`adaptation.configs` reduced to the target's configurations; genvpt/targets/run.py) and runs the main pipeline's own
entry points on it, with `--params <derived file>` and every path inside the target's folder:
stages.prepare (--block dataset) -> prepared/, stages.tokenize for each tokenizer family the configurations read
-> tokens/<family>/ (+ -metrics.json), stages.adapt per configuration -> adapted/<config>/ (+ .json), stages.sample
for each frozen backbone they adapt (sampling seeds) and each configuration (training seeds) -> samples/<row>/, and
stages.score -> scores/. The tokenizers, generators and CLIP are the pipeline's own files, never retrained.

The work happens in <out>.partial/ (resumed by a rerun when the derived params and the input files are unchanged:
finished steps are kept, adapt resumes from its checkpoint) and appears as <out> in one rename; then --summary gets
each row's FD, class accuracy (the probe trained on this target's real train images) and trainable parameters, mean
and std over seeds, with the target's dataset block and the tokenizers' PSNR on its val / test splits."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

import yaml

from genvpt.config import DEFAULT_PARAMS, read_params_mapping, validate_params
from genvpt.faults import run_stage
from genvpt.io import atomic_dir, read_json, write_json, write_text
from genvpt.logs import setup_logging
from genvpt.targets.run import derived_params, inputs_stamp, target_rows, target_summary

log = logging.getLogger("stages.extra_target")

STAMP = "inputs.json"
PARAMS = "params.yaml"


def _need(path: Path, stage: str) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run stage {stage} first")
    return str(path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="the target's name in params extra_targets")
    ap.add_argument("--out", required=True, help="the target's folder (data/targets/<name>), written atomically")
    ap.add_argument("--summary", required=True, help="the summary JSON (results/targets/<name>.json)")
    ap.add_argument("--tokenizers", default="data/tokenizers", help="folder of <family>/model.pt (pretrain_tokenizer)")
    ap.add_argument("--generators", default="data/generators",
                    help="folder of <backbone>/model.pt (pretrain_generator)")
    ap.add_argument("--clip", default="data/clip/model.pt", help="the CLIP file adapt reads (as adapt@ is given it)")
    ap.add_argument("--params", default=None, help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    setup_logging()
    params_path = Path(args.params or os.environ.get("GENVPT_PARAMS", DEFAULT_PARAMS))
    raw = read_params_mapping(params_path) or {}
    params = validate_params(raw, str(params_path))
    name = args.name
    if name not in params.extra_targets:
        ap.error(f"no extra target {name!r} in {params_path}; params extra_targets has: "
                 f"{', '.join(params.extra_targets) or '(none)'}")
    out = Path(args.out)
    work = out.parent / f"{out.name}.partial"

    derived = derived_params(raw, params, name)
    text = ("# derived by stages/extra_target.py from " + str(params_path) + f" for extra target {name}: `dataset` "
            "merged with its overrides, adaptation.configs reduced to its configurations\n"
            + yaml.safe_dump(derived, sort_keys=False))
    dparams = validate_params(derived, f"the params derived for extra target {name} ({work / PARAMS})")
    rows = target_rows(dparams, name)
    toks = {f: _need(Path(args.tokenizers) / f / "model.pt", f"pretrain_tokenizer@{f}") for f in rows["families"]}
    gens = {bb: _need(Path(args.generators) / bb / "model.pt", f"pretrain_generator@{bb}") for bb in rows["frozen"]}
    log.info("extra target %s: %d configuration(s) %s, frozen row(s) %s, tokenizer(s) %s", name, len(rows["configs"]),
             rows["configs"], rows["frozen"], rows["families"])

    # a work folder left by an interrupted run is resumed only when it was computed from the same inputs
    stamp = inputs_stamp(text, [*toks.values(), *gens.values(), args.clip])
    if work.exists():
        old = read_json(work / STAMP) if (work / STAMP).is_file() else None
        if old != stamp:
            log.info("%s was computed from other inputs (or is incomplete): starting afresh", work)
            shutil.rmtree(work)
        else:
            log.info("resuming %s: finished steps are kept", work)
    if not work.exists():
        work.mkdir(parents=True)
        write_text(work / PARAMS, text)
        write_json(work / STAMP, stamp)  # last: a work folder without it is never resumed
    p = ["--params", str(work / PARAMS)]

    from stages import adapt, prepare, sample, score, tokenize

    prepared = work / "prepared"
    if not prepared.is_dir():
        prepare.main(["--block", "dataset", "--out", str(prepared), *p])
    for fam in rows["families"]:
        tok_out, tok_metrics = work / "tokens" / fam, work / "tokens" / f"{fam}-metrics.json"
        if not (tok_out.is_dir() and tok_metrics.is_file()):
            tokenize.main(["--family", fam, "--tokenizer", toks[fam], "--data", str(prepared), "--out", str(tok_out),
                           "--metrics", str(tok_metrics), *p])
    for cfg_name in rows["configs"]:
        cfg = dparams.adaptation.config(cfg_name)
        ad_out, ad_summary = work / "adapted" / cfg_name, work / "adapted" / f"{cfg_name}.json"
        if not (ad_out.is_dir() and ad_summary.is_file()):
            # no --captions: a target without a caption stage uses the captions its shards hold (else the class
            # sentence); VPT's class prompts read none
            adapt.main(["--config", cfg_name, "--tokens", str(work / "tokens" / cfg.tokenizer),
                        "--generator", gens[cfg.backbone], "--tokenizer", toks[cfg.tokenizer], "--clip", args.clip,
                        "--out", str(ad_out), "--summary", str(ad_summary), *p])
    samples = work / "samples"
    for bb in rows["frozen"]:  # as sample_frozen@<backbone>
        if not (samples / bb).is_dir():
            sample.main(["--target", str(prepared), "--out", str(samples / bb), "--backbone", bb,
                         "--generator", gens[bb], "--tokenizer", toks[rows["tokenizer_of"][bb]], *p])
    for cfg_name in rows["configs"]:  # as sample@<config>
        if not (samples / cfg_name).is_dir():
            sample.main(["--target", str(prepared), "--out", str(samples / cfg_name), "--config", cfg_name,
                         "--adapted", str(work / "adapted" / cfg_name), *p])
    if not (work / "scores").is_dir():
        # --allow-missing: the score stage's rows are every frozen backbone; this target samples those its
        # configurations adapt (target_summary refuses a missing one of those)
        score.main(["--samples", str(samples), "--target", str(prepared), "--out", str(work / "scores"),
                    "--allow-missing", *p])
    summary = target_summary(name, params=dparams, rows=rows, work=work,
                             overrides=params.extra_targets[name].dataset)

    with atomic_dir(out) as tmp:
        # the stamp first: a work folder interrupted from here on has none and is started afresh
        os.replace(work / STAMP, tmp / STAMP)
        for child in sorted(work.iterdir()):
            os.replace(child, tmp / child.name)
    work.rmdir()
    write_json(args.summary, summary)
    log.info("extra target %s: %s and %s", name, out, args.summary)
    return summary


if __name__ == "__main__":
    run_stage(main)
