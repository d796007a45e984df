"""Hyperparameter selection on the target's VAL split (never on test, which the report scores).

For each adaptation configuration named with ``--config`` (default: the VPT configurations of params.yaml), train it
once with each candidate value of ``--key`` (default ``train.lr``; a method option such as ``init`` works too;
candidates ``--values``; ``--set KEY=VALUE`` fixes another key for every run) with the first training seed of
``adaptation.seeds``, and record the backbone's training loss on the held-out val tokens before and after (next-token
CE for the AR, masked-token CE with a fixed mask seed for MaskGIT, teacher-forced CE for VAR). params.yaml is not
edited (copy the choice by hand, with the results file as the evidence). Two criteria choose the value reported as
``chosen``:

* ``--criterion loss`` (default): the lowest val loss after training (``val_loss_after``). For VPT this rewards
  texture over class (samples of the chosen setting can lose their class), hence the second criterion.
* ``--criterion samples``: each candidate is also judged by its SAMPLES, the way the score stage judges the report's
  rows but against the real VAL images of the prepared target (data/prepared/target, split val).
  ``--samples-per-class`` (default 20) images per class are drawn from the trained candidate with the pipeline's
  sampler (genvpt.sampling.sample_config, kind ``adapted``, as the sample stage draws an adapted row: sampling seed
  ``sample.seed``, ``sample.batch_size`` / ``sample.device``, the backbone's ``generator.<family>.sample``), and the
  frozen backbone once per configuration the same way (kind ``backbone``, same count, same sampling seed). Each set
  gets ``val_fd_clip`` (Frechet distance on the CLIP image features of params ``clip``, against the val images;
  CLIP space whatever ``metrics.inception_weights`` says), ``val_class_accuracy`` (the score stage's judge: a
  logistic-regression probe, ``metrics.probe_c`` / ``probe_max_iter``, on CLIP features of the real target TRAIN
  split) and ``val_texture_share`` (the score stage's texture judge when ``metrics.texture_share`` is on for the
  target, else null); genvpt.metrics.compute_metrics computes the first two. The rule (RULE below, also written to
  the results): among the candidates whose val class accuracy is at least ``--min-class-accuracy`` (default 0.5)
  times the frozen backbone's, the lowest FD-CLIP; if none qualifies, the highest val class accuracy (ties: the
  earlier value of ``--values``).

Needs the pipeline's outputs up to ``tokenize@*-target`` and ``pretrain_generator@*`` (data/); ``--criterion samples``
also ``prepare_target`` and ``pretrain_clip`` (data/prepared/target, the CLIP file of ``clip.pretrained``). Everything
else comes from params.yaml (adaptation.train, the configuration's own options and, for the samples criterion,
``sample``, ``generator.<family>.sample``, ``clip``, ``metrics``, ``dataset``).

    python benchmarks/select_hparams.py --config vpt-ar --config vpt-maskgit --values 0.001 0.003 0.01 0.03
    python benchmarks/select_hparams.py --config vpt-ar --config vpt-maskgit --key train.lr \\
        --values 0.001 0.003 0.01 --set init=condition --criterion samples --name select_vpt_lr_samples
"""
from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from _common import ROOT, add_search_arguments, block, params_value, save_results, search_config


DEFAULT_VALUES = [0.001, 0.003, 0.01, 0.03]  # --values' default
CRITERIA = ("loss", "samples")
DEFAULT_SAMPLES_PER_CLASS = 20  # --samples-per-class
DEFAULT_MIN_CLASS_ACCURACY = 0.5  # --min-class-accuracy
RULE = ("samples criterion: a candidate qualifies when its val_class_accuracy >= min_class_accuracy x the frozen "
        "backbone's val_class_accuracy (same val protocol: same images per class, same sampling seed); chosen = the "
        "qualifying candidate with the lowest val_fd_clip; if none qualifies, the candidate with the highest "
        "val_class_accuracy; ties go to the earlier value of --values")
METRICS_KEYS = ("metrics.device", "metrics.batch_size", "metrics.probe_c", "metrics.probe_max_iter", "metrics.seed",
                "metrics.texture_share", "metrics.text_template")
DATASET_KEYS = ("dataset.name", "dataset.image_size", "dataset.seed", "dataset.shapes")  # what the texture judge reads
SAMPLE_KEYS = ("sample.seed", "sample.batch_size", "sample.device")
declared_overrides = {  # settings params.yaml does not give (benchmarks/_common.py; tests/test_benchmarks_params.py)
    "benchmark.search": "what is compared: --key with each of --values (and every --set), over params.yaml's value; "
                        "params.yaml is not edited",
    "benchmark.device": "backbones are trained on CPU here (load_backbone(device='cpu')), whatever "
                        "adaptation.device says; --criterion samples samples on sample.device and scores on "
                        "metrics.device / clip.device, as the sample and score stages do",
    "benchmark.split": "the selection is made on the val split (the report scores test); --criterion samples "
                       "compares samples with the real val images, not metrics.real_split's",
    "benchmark.criterion": "how a candidate is judged (--criterion): loss = lowest val token loss after training; "
                           "samples = its samples against the real val images (FD-CLIP, class accuracy under the "
                           "score stage's probe, texture share) with the rule in the results' `rule`",
    "benchmark.samples_per_class": "--samples-per-class: images per class drawn from each candidate and the frozen "
                                   "backbone (sample.images_per_class is the report's count); null: loss criterion",
    "benchmark.min_class_accuracy": "--min-class-accuracy: a candidate qualifies with at least this times the "
                                    "frozen backbone's val class accuracy; null: loss criterion",
    "benchmark.feature_space": "--criterion samples: FD on CLIP image features (FD-CLIP) whatever "
                               "metrics.inception_weights says; null: loss criterion",
}


def _config_names(params, args) -> list[str]:
    names = list(getattr(args, "config", None) or []) if args is not None else []
    return names or [n for n, c in params.adaptation.configs.items() if c.get("method") == "vpt"]


def settings(params, args=None) -> dict:
    """Every setting this benchmark runs with (see benchmarks/_common.py)."""
    names = _config_names(params, args)
    st = {"adaptation.seeds": list(params.adaptation.seeds),
          "adaptation.train": params.adaptation.train.model_dump(mode="json"),
          "caption.sentence_template": params.caption.sentence_template}
    for n in names:
        st[f"adaptation.configs.{n}"] = dict(params.adaptation.configs[n])
    st["benchmark.search"] = {"key": getattr(args, "key", "train.lr") if args is not None else "train.lr",
                              "values": list(getattr(args, "values", None) or DEFAULT_VALUES),
                              "set": list(getattr(args, "set", None) or [])}
    st["benchmark.device"] = "cpu"
    st["benchmark.split"] = "val"
    criterion = getattr(args, "criterion", "loss") if args is not None else "loss"
    samples = criterion == "samples"
    st["benchmark.criterion"] = criterion
    st["benchmark.samples_per_class"] = int(args.samples_per_class) if samples else None
    st["benchmark.min_class_accuracy"] = float(args.min_class_accuracy) if samples else None
    st["benchmark.feature_space"] = "clip" if samples else None
    if samples:
        for k in SAMPLE_KEYS + METRICS_KEYS + DATASET_KEYS:
            st[k] = params_value(params, k)
        for fam in dict.fromkeys(params.adaptation.configs[n].get("backbone") for n in names):
            st[f"generator.{fam}.sample"] = params_value(params, f"generator.{fam}.sample")
        st.update(block(params, "clip", exclude=("train",)))
    return st


# ------------------------------------------------------------------------------------------- the samples criterion


def _rooted(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


class ValSampleJudge:
    """Samples a model with the pipeline's sampler and scores the set against the target's real val images, as the
    score stage scores a report row (FD in CLIP space, class accuracy under the probe fitted on the real train split,
    texture share when params turn it on)."""

    def __init__(self, params: Any, root: Path, images_per_class: int):
        from genvpt.datasets.shards import load_split
        from genvpt.sampling_params import SampleParams
        from genvpt.metrics.scoring import load_scoring_clip
        from genvpt.metrics.texture import fit_shapes_judge, texture_share_enabled
        from genvpt.training import resolve_device

        self.params = params
        self.mp = params.metrics
        target = root / "data" / "prepared" / "target"
        self.val = load_split(target, "val")
        self.train = load_split(target, "train")
        self.class_names = list(self.val.class_names)
        self.sample_params = SampleParams.model_validate(
            {**params.sample.model_dump(mode="json"), "images_per_class": int(images_per_class), "configs": []})
        self.clip = load_scoring_clip(params, _rooted(root, params.clip.pretrained))
        self.device = resolve_device(self.mp.device, "metrics.device")
        self.template = self.mp.text_template or params.caption.sentence_template
        self.texture = (fit_shapes_judge(params.dataset, seed=self.mp.seed)
                        if texture_share_enabled(self.mp.texture_share, params.dataset) else None)
        self.cache: dict = {}  # CLIP features of the val and train images, computed once

    def protocol(self) -> dict:
        """What every candidate and the frozen backbone are measured with (for the results file)."""
        out = {"real_split": "val", "n_reals": len(self.val), "probe_fit_split": "train", "n_probe_fit": len(self.train),
               "class_names": self.class_names, "images_per_class": self.sample_params.images_per_class,
               "sampling_seed": self.sample_params.seed, "feature_space": "clip",
               "class_accuracy": f"logistic-regression probe (C={self.mp.probe_c:g}, max_iter={self.mp.probe_max_iter}) "
                                 "on CLIP image features of the real train split, applied to the samples (their "
                                 "labels: the conditioning classes)",
               "texture_share": None}
        if self.texture is not None:
            held = self.texture.record["heldout"]
            out["texture_share"] = {"setting": self.mp.texture_share, "heldout_accuracy_clean": held["accuracy_clean"],
                                    "heldout_accuracy_blurred_mean": held["accuracy_blurred_mean"],
                                    "real_val_share": self.texture.share(self.val.images)}
        return out

    def sample_and_score(self, cfg: Any) -> dict:
        """Sample ``cfg`` (a genvpt.sampling.SampleConfig) with the sample stage's code and score it on val."""
        from genvpt.sampling import SampleSet, sample_config

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / cfg.name
            sample_config(cfg, self.class_names, self.sample_params, out, full_params=self.params, show_progress=False)
            sset = SampleSet(out)
            images, labels = sset.load_images(), sset.labels
        return {**self.score(images, labels), "sample_score_seconds": round(time.perf_counter() - t0, 1)}

    def score(self, images: Any, labels: Any) -> dict:
        from genvpt.metrics import compute_metrics

        mp = self.mp
        m = compute_metrics(
            images, self.val.images, fid=True, isc=False, kid=False, prc=False, clip_score=False, diversity=False,
            class_accuracy=True, labels=labels, class_names=self.class_names, real_labels=self.val.labels,
            train_images=self.train.images, train_labels=self.train.labels, inception_weights=None,
            clip_model=self.clip, device=self.device, batch_size=mp.batch_size, text_template=self.template,
            probe_c=mp.probe_c, probe_max_iter=mp.probe_max_iter, seed=mp.seed, feature_cache=self.cache)
        return {"val_fd_clip": m["fd_clip"], "val_class_accuracy": m["class_acc"],
                "val_texture_share": self.texture.share(images) if self.texture is not None else None,
                "val_probe_real_accuracy": m.get("probe_real_acc"), "val_n_samples": m["n_samples"]}


def choose_by_samples(rows: list[dict], frozen: dict, min_class_accuracy: float) -> dict:
    """RULE applied to the candidates' ``rows`` (in --values order) and the frozen backbone's numbers."""
    threshold = float(min_class_accuracy) * float(frozen["val_class_accuracy"])
    qualifying = [r for r in rows if r["val_class_accuracy"] >= threshold]
    if qualifying:
        fd = lambda r: r["val_fd_clip"] if math.isfinite(r["val_fd_clip"]) else math.inf  # noqa: E731
        best, how = min(qualifying, key=fd), "lowest val_fd_clip among the qualifying candidates"
    else:
        best = max(rows, key=lambda r: r["val_class_accuracy"])
        how = "no candidate qualified: highest val_class_accuracy"
    return {"chosen": best["value"], "chosen_by": how, "min_class_accuracy": float(min_class_accuracy),
            "class_accuracy_threshold": threshold, "qualifying": [r["value"] for r in qualifying]}


# ------------------------------------------------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None, root: Path = ROOT) -> dict:
    """Run the selection (``root``: the checkout whose params.yaml and data/ are read) and save the results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None)
    ap.add_argument("--criterion", choices=CRITERIA, default="loss",
                    help="loss: lowest val token loss (default); samples: FD-CLIP / class accuracy of samples on val")
    ap.add_argument("--samples-per-class", type=int, default=DEFAULT_SAMPLES_PER_CLASS,
                    help="--criterion samples: images per class from each candidate and from the frozen backbone")
    ap.add_argument("--min-class-accuracy", type=float, default=DEFAULT_MIN_CLASS_ACCURACY,
                    help="--criterion samples: qualify with at least this times the frozen backbone's class accuracy")
    add_search_arguments(ap, "select_hparams", DEFAULT_VALUES)
    args = ap.parse_args(argv)
    if args.samples_per_class < 1:
        ap.error("--samples-per-class must be at least 1")
    if args.min_class_accuracy < 0:
        ap.error("--min-class-accuracy must not be negative")
    import torch  # noqa: F401

    from genvpt.adaptation.data import load_train_data
    from genvpt.adaptation.params import AdaptationParams
    from genvpt.adaptation.train import file_source, train_adaptation
    from genvpt.backbones import load_backbone
    from genvpt.config import load_params
    from genvpt.sampling import SampleConfig

    logging.basicConfig(level=logging.WARNING)
    root = Path(root)
    params = load_params(root / "params.yaml")
    ap_ = params.adaptation
    names = _config_names(params, args)
    seed = ap_.seeds[0]
    samples = args.criterion == "samples"
    judge = ValSampleJudge(params, root, args.samples_per_class) if samples else None
    frozen_cache: dict = {}
    results = {}
    for name in names:
        base = ap_.config(name)
        tokens = root / "data" / "tokens" / base.tokenizer / "target"
        gen = root / "data" / "generators" / base.backbone / "model.pt"
        tok = root / "data" / "tokenizers" / base.tokenizer / "model.pt"
        data = load_train_data(tokens, None, params.caption.sentence_template)
        val = load_train_data(tokens, None, params.caption.sentence_template, split="val")
        if samples and list(data.class_names) != judge.class_names:
            raise ValueError(f"{tokens}: token classes {data.class_names} differ from the prepared target's "
                             f"{judge.class_names}")
        train_kw = {"source": file_source(gen, tok)} if samples else {}  # the model file names its backbone
        rows = []
        for v in args.values:
            raw = search_config(ap_.configs[name], args.key, v, args.set)
            cfg = AdaptationParams(train=ap_.train, configs={name: raw}).config(name)
            backbone = load_backbone(base.backbone, gen, tok, device="cpu")
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as d:
                rec = train_adaptation(cfg, backbone=backbone, data=data, out_dir=d, seed=seed, progress=False,
                                       val_data=val, **train_kw)
                seconds = round(time.perf_counter() - t0, 1)
                row = {"value": v, "val_loss_before": rec["val_loss_before"], "val_loss_after": rec["val_loss_after"],
                       "final_train_loss": rec["final_loss"], "trainable_params": rec["trainable_params"],
                       "seconds": seconds}
                if samples:
                    row.update(judge.sample_and_score(SampleConfig(name=name, kind="adapted",
                                                                   generator=str(Path(d) / "model.pt"))))
            rows.append(row)
            print(name, args.key, v, rows[-1], flush=True)
        if not samples:
            best = min(rows, key=lambda r: r["val_loss_after"])
            results[name] = {"key": args.key, "seed": seed, "train_samples": len(data), "val_samples": len(val),
                             "rows": rows, "chosen": best["value"]}
            continue
        fkey = (base.backbone, str(gen), str(tok))
        if fkey not in frozen_cache:
            frozen_cache[fkey] = judge.sample_and_score(SampleConfig(
                name=base.backbone, kind="backbone", family=base.backbone, generator=str(gen), tokenizer=str(tok)))
            print(name, "frozen", base.backbone, frozen_cache[fkey], flush=True)
        frozen = {"backbone": base.backbone, **frozen_cache[fkey]}
        choice = choose_by_samples(rows, frozen, args.min_class_accuracy)
        results[name] = {"key": args.key, "seed": seed, "train_samples": len(data), "val_samples": len(val),
                         "rows": rows, "criterion": "samples", "frozen": frozen, **choice,
                         "chosen_by_loss": min(rows, key=lambda r: r["val_loss_after"])["value"]}
        print(name, "chosen", choice["chosen"], f"({choice['chosen_by']})", flush=True)
    run_settings = {"key": args.key, "values": args.values, "set": args.set, "configs": names,
                    "adaptation_train": ap_.train.model_dump(mode="json")}
    if not samples:
        payload = {"settings": run_settings, "split": "val", "results": results}
    else:
        run_settings.update(criterion="samples", samples_per_class=args.samples_per_class,
                            min_class_accuracy=args.min_class_accuracy)
        payload = {"settings": run_settings, "split": "val", "criterion": "samples", "rule": RULE,
                   "val_protocol": judge.protocol(), "results": results}
    save_results(args.name, payload, settings=settings(params, args), declared=declared_overrides, params=params)
    return payload


if __name__ == "__main__":
    main()
