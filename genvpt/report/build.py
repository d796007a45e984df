"""Build report/index.html (self-contained: images embedded) and report/report.md (images in report/plots/).

Every number is ``mean ± std (n=N)`` over a report row's seeds (``scores/summary.parquet``): training seeds for adapted
rows, sampling seeds for frozen rows. The report states the sampling noise once (the frozen rows' std over sampling
seeds), marks a column's best only beyond the spread (:data:`genvpt.report.tables.BEST_RULE`), compares the pairs
given to :func:`build_report` with both spreads, and shows variants the papers average (``mvp-random0/1/2``) also as
one averaged row."""
from __future__ import annotations

import base64
import html
import logging
import math
import os
import re
from pathlib import Path
from typing import Optional, Sequence

from ..io import atomic_dir, read_json
from ..metrics.params import ReportParams
from ..metrics.registry import metric_info
from ..metrics.scoring import json_number as _json_safe
from .classify import classify_html, classify_markdown, load_classify_results
from .figures import image_grid, plot_curves, plot_fd_vs_params, save_grid
from .targets import load_target_results, targets_html, targets_markdown
from .tables import (
    BEST_RULE,
    beyond_spread,
    best_per_column,
    format_cell,
    format_value,
    html_table,
    is_number as _is_num,
    markdown_table,
    spread_of,
    table_columns,
)

log = logging.getLogger(__name__)

__all__ = ["build_report", "load_table_rows", "load_set_rows", "discover_curves", "variant_groups",
           "averaged_variant_rows", "with_averaged_rows", "comparison_lines", "sampling_noise_lines",
           "best_lines", "memory_lines", "headline_keys", "DEFAULT_COMPARISONS", "AVERAGE_RULE"]

# headline comparisons (a, b): "a against b"; pairs naming a row that is not in the table are reported as such
DEFAULT_COMPARISONS: tuple[tuple[str, str], ...] = (("mvp", "var"), ("lora", "mvp"))

AVERAGE_RULE = (
    "Rows named <prefix><i> with i = 0..n−1 (or 1..n), n ≥ 2, are variants the papers average (e.g. mvp-random0/1/2): "
    "they are also shown as one row '<prefix> (avg of n)', whose numbers are the mean and std over all sample sets of "
    "the variants (n = variants × seeds). Averaged rows are not ranked."
)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
table.metrics{border-collapse:collapse;font-size:.85em;margin:1em 0}
table.metrics th,table.metrics td{border:1px solid #ddd;padding:.35em .6em;text-align:right;white-space:nowrap}
table.metrics thead th{background:#f4f6f8;cursor:help}table.metrics tbody th{text-align:left}
td.best{font-weight:700;background:#e6f4ea}tr.avg{font-style:italic;background:#fafafa}
.grids{display:flex;flex-wrap:wrap;gap:1.4em}.grids figure{margin:0}.grids figcaption{font-size:.85em;color:#555}
img{image-rendering:pixelated;max-width:100%}dl dt{font-weight:600;margin-top:.5em}dl dd{margin-left:1.2em;color:#444}
"""

_VARIANT = re.compile(r"^(.*\D)(\d+)$")


def _read_rows(path: Path) -> list[dict]:
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the score stage first")
    df = pd.read_parquet(path)
    return [{k: _json_safe(v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def _ordered(rows: list[dict], order: Optional[Sequence[str]]) -> list[dict]:
    if order is None:
        return rows
    pos = {n: i for i, n in enumerate(order)}
    return sorted(rows, key=lambda r: pos.get(r["row"], len(pos)))


def load_table_rows(scores_dir: str | os.PathLike, order: Optional[Sequence[str]] = None) -> list[dict]:
    """Rows of ``summary.parquet`` (one per report row: ``row``, ``n_seeds``, ``<key>``, ``<key>_std``, ...) as
    JSON-safe dicts (NaN -> None), in ``order`` of row names when given (else the score stage's row order)."""
    return _ordered(_read_rows(Path(scores_dir) / "summary.parquet"), order)


def load_set_rows(scores_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``metrics.parquet``: one per sample set (``row``, ``seed``, every metric)."""
    return _read_rows(Path(scores_dir) / "metrics.parquet")


# --------------------------------------------------------------------------------------------------------------
# averaged variants


def variant_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """``{prefix: [names]}`` for names ``<prefix><i>`` whose numbers are 0..n−1 or 1..n with n ≥ 2 (mvp-random0/1/2);
    numbered settings that are not replicates (mvp-tau4/12/28) do not qualify."""
    by: dict[str, list[tuple[int, str]]] = {}
    for n in names:
        m = _VARIANT.match(n)
        if m and not (len(m.group(2)) > 1 and m.group(2).startswith("0")):
            by.setdefault(m.group(1), []).append((int(m.group(2)), n))
    out = {}
    for prefix, members in by.items():
        nums = sorted(i for i, _ in members)
        if len(nums) >= 2 and nums[0] in (0, 1) and nums == list(range(nums[0], nums[0] + len(nums))):
            out[prefix] = [n for _, n in sorted(members)]
    return out


def averaged_variant_rows(summary_rows: Sequence[dict], set_rows: Sequence[dict]) -> list[dict]:
    """One row per variant group (:func:`variant_groups` of the summary's rows): ``row`` = '<prefix> (avg of n)',
    ``averaged_from`` = the variants, ``n_seeds`` = their sample sets, and every summary key as the mean and sample
    std (ddof=1) over all those sets."""
    from ..metrics.scoring import summary_keys

    names = [r["row"] for r in summary_rows]
    keys = summary_keys(set_rows) if set_rows else []
    out = []
    for prefix, members in variant_groups(names).items():
        sets = [s for s in set_rows if s["row"] in members]
        first = next(r for r in summary_rows if r["row"] == members[0])
        row = {"row": f"{prefix} (avg of {len(members)})", "variant_prefix": prefix, "averaged_from": list(members),
               "kind": first.get("kind"), "backbone": first.get("backbone"), "method": first.get("method"),
               "spread_over": first.get("spread_over"), "n_seeds": len(sets),
               "images_per_set": first.get("images_per_set"), "n_reals": first.get("n_reals"),
               "real_split": first.get("real_split")}
        for k in keys:
            vals = [float(s[k]) for s in sets if _is_num(s.get(k))]
            mean = math.fsum(vals) / len(vals) if vals else math.nan
            std = (math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
                   if len(vals) >= 2 else math.nan)
            row[k], row[f"{k}_std"] = _json_safe(mean), _json_safe(std)
        out.append(row)
    return out


def with_averaged_rows(summary_rows: Sequence[dict], set_rows: Sequence[dict]) -> list[dict]:
    """The summary rows with each averaged variant row inserted after its last variant."""
    rows = list(summary_rows)
    for avg in averaged_variant_rows(summary_rows, set_rows):
        last = max(i for i, r in enumerate(rows) if r["row"] in avg["averaged_from"])
        rows.insert(last + 1, avg)
    return rows


# --------------------------------------------------------------------------------------------------------------
# sample sets and curves


def _first_set_dir(samples_dir: str | os.PathLike, row: dict) -> Optional[Path]:
    """The folder of the row's first seed's sample set."""
    seeds = [s for s in str(row.get("seeds") or "").split(",") if s.strip()]
    d = Path(samples_dir) / row["row"]
    cands = [d / f"seed-{seeds[0].strip()}"] if seeds else sorted(d.glob("seed-*"))
    return next((c for c in cands if (c / "record.json").is_file()), None)


def discover_curves(record: Optional[dict]) -> list[Path]:
    """A sample set's training-curve CSVs, from its record: ``curves`` (paths), else the training record's
    ``curves``, else the CSVs next to the training record (``train_record``) or the generator / model file the record
    names. Only existing files; [] when nothing is found (frozen rows imported from a checkpoint, missing files)."""
    if not record:
        return []
    cfg = record.get("config") if isinstance(record.get("config"), dict) else {}

    def existing(paths) -> list[Path]:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        return [Path(p) for p in paths or [] if isinstance(p, (str, os.PathLike)) and Path(p).is_file()]

    found = existing(record.get("curves")) or existing(cfg.get("curves"))
    if found:
        return found
    train_record = record.get("train_record") or cfg.get("train_record")
    if train_record and Path(train_record).is_file():
        try:
            tr = read_json(train_record)
            found = existing(tr.get("curves")) if isinstance(tr, dict) else []
        except (OSError, ValueError) as err:
            log.warning("training record %s not readable: %s", train_record, err)
        if found:
            return found
    dirs: list[Path] = []
    for p in (train_record, record.get("generator"), record.get("model"), cfg.get("generator")):
        if isinstance(p, str) and p:
            d = Path(p).parent
            if d not in dirs:
                dirs.append(d)
    return [c for d in dirs if d.is_dir() for c in sorted(d.glob("*.csv"))]


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


# --------------------------------------------------------------------------------------------------------------
# statements


def headline_keys(rows: Sequence[dict]) -> list[str]:
    """FID (or FD-CLIP), CLIP score, diversity and class accuracy: those present in the rows."""
    from ..metrics.scoring import fd_key

    fk = next((fd_key(r) for r in rows if fd_key(r)), None)
    div = next((k for k in ("diversity_lpips", "diversity_clip") if any(_is_num(r.get(k)) for r in rows)), None)
    return [k for k in (fk, "clip_score", div, "class_acc") if k and any(_is_num(r.get(k)) for r in rows)]


def _arrow(k: str) -> str:
    hib = metric_info(k).higher_is_better
    return " ↑" if hib is True else " ↓" if hib is False else ""


def _find(rows: Sequence[dict], name: str) -> Optional[dict]:
    for r in rows:
        if r["row"] == name:
            return r
    for r in rows:  # an averaged variant row by its prefix ("mvp-random")
        if r.get("variant_prefix") == name:
            return r
    return None


def comparison_lines(rows: Sequence[dict], pairs: Sequence[Sequence[str]], keys: Sequence[str]) -> list[str]:
    """One line per pair and key: both values with their spreads, the difference, and whether it is beyond the
    spread (|difference| > std_a + std_b), and then which row is better; 'within the spread' otherwise."""
    out = []
    for pair in pairs:
        a_name, b_name = pair
        a, b = _find(rows, a_name), _find(rows, b_name)
        if a is None or b is None:
            missing = [n for n, r in ((a_name, a), (b_name, b)) if r is None]
            out.append(f"{a_name} vs {b_name}: not compared, no row {' or '.join(missing)} in the table")
            continue
        for k in keys:
            if not (_is_num(a.get(k)) and _is_num(b.get(k))):
                continue
            d = float(a[k]) - float(b[k])
            diff = ("+" if d >= 0 else "−") + format_value(k, abs(d))
            beyond = beyond_spread(a, b, k)
            if beyond is None:
                verdict = "spread unknown (a row has a single seed): not decided"
            elif beyond:
                hib = metric_info(k).higher_is_better
                if hib is None:
                    verdict = "beyond the spread"
                else:
                    win = a["row"] if (d > 0) == hib else b["row"]
                    verdict = f"beyond the spread: {win} is better"
            else:
                verdict = f"within the spread (|difference| ≤ {format_value(k, spread_of(a, k) + spread_of(b, k))}, " \
                          f"the sum of the two stds)"
            out.append(f"{a['row']} vs {b['row']}, {metric_info(k).label}{_arrow(k)}: {format_cell(k, a)} vs "
                       f"{format_cell(k, b)}; difference {diff}: {verdict}")
    return out


def sampling_noise_lines(rows: Sequence[dict], keys: Sequence[str]) -> list[str]:
    """The sampling noise, once: for each key, the std over sampling seeds of each frozen row (one model sampled
    with several seeds)."""
    frozen = [r for r in rows if r.get("spread_over") == "sampling_seed" and not r.get("averaged_from")]
    measured = [r for r in frozen if _is_num(r.get("n_seeds")) and int(r["n_seeds"]) >= 2]
    if not measured:
        return ["not measured (no frozen row was sampled with two or more sampling seeds)"]
    out = []
    for k in keys:
        parts = [f"{format_value(k, r[f'{k}_std']) if _is_num(r.get(f'{k}_std')) else '–'} ({r['row']}, "
                 f"n={int(r['n_seeds'])})" for r in measured if _is_num(r.get(k))]
        if parts:
            out.append(f"{metric_info(k).label}{_arrow(k)}: " + ", ".join(parts))
    return out


def best_lines(rows: Sequence[dict], keys: Sequence[str]) -> list[str]:
    """Per key: the row that is best beyond the spread, or that no row is (with the best mean)."""
    best = best_per_column(rows, keys)
    out = []
    for k in keys:
        hib = metric_info(k).higher_is_better
        ranked = [r for r in rows if _is_num(r.get(k)) and not r.get("averaged_from")]
        if hib is None or not ranked:
            continue
        if k in best:
            r = rows[min(best[k])]
            out.append(f"best {metric_info(k).label}{_arrow(k)}: {r['row']} ({format_cell(k, r)}), beyond the spread "
                       f"of every other row")
        else:
            top = (max if hib else min)(ranked, key=lambda r: float(r[k]))
            out.append(f"{metric_info(k).label}{_arrow(k)}: no row is better than all others beyond the spread "
                       f"(best mean: {top['row']}, {format_cell(k, top)})")
    return out


def memory_lines(rows: list[dict], benchmark: Optional[str | os.PathLike] = None) -> list[str]:
    """MVP's peak training memory against the prefilled prompt's (MVP adds its prompts to the token maps, the
    prefilled prompt makes the sequence longer): from the rows' training records (means over seeds), and from the
    VAR-d16 benchmark file when there is one."""
    out = []
    by = {r.get("row", r.get("config")): r for r in rows}
    mvp, pre = by.get("mvp", {}), by.get("prefilled", {})
    a, b = mvp.get("train_peak_memory_mb"), pre.get("train_peak_memory_mb")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        out.append(f"this pipeline (its own VAR and batch): MVP {a:.0f} MiB vs prefilled {b:.0f} MiB peak training "
                   f"memory, ratio {a / b:.2f}")
    if benchmark is not None and Path(benchmark).is_file():
        try:
            d = read_json(benchmark)
            sizes = d["sizes"] if isinstance(d.get("sizes"), dict) else {"": d}
            for name, e in sizes.items():
                runs = e["runs"]
                depth = e.get("depth", d.get("depth"))
                out.append(f"VAR-d{depth} ({name or 'benchmark'}) with random weights, batch {e['batch_size']} on "
                           f"{d.get('device', e.get('device'))}, attention kernel {e.get('attention_kernel', '?')} for "
                           f"both ({Path(benchmark).as_posix()}): MVP {runs['mvp']['peak_mb']:.0f} MiB vs prefilled "
                           f"{runs['prefilled']['peak_mb']:.0f} MiB, ratio {e['ratio_peak']:.2f}"
                           + (f" ({e['ratio_above_start']:.2f} counting only what the training steps add)"
                              if isinstance(e.get("ratio_above_start"), (int, float)) else "")
                           + f"; the paper: {d.get('paper_ratio', 0.625):.3f} (14.5 vs 23.2 GB at d16 on a GPU)")
        except (KeyError, TypeError, ValueError) as err:
            log.warning("memory benchmark %s not understood: %s", benchmark, err)
    return out


def _space_note(defs: dict) -> str:
    return defs.get("feature_space_note", "")


def _seed_counts(rows: Sequence[dict], spread: str) -> str:
    ns = sorted({int(r["n_seeds"]) for r in rows if r.get("spread_over") == spread and not r.get("averaged_from")
                 and _is_num(r.get("n_seeds"))})
    return "/".join(str(n) for n in ns) if ns else "0"


def _settings(rows: Sequence[dict], defs: dict) -> list[str]:
    sizes = sorted({int(r["images_per_set"]) for r in rows if _is_num(r.get("images_per_set"))})
    per_class = sorted({int(r["images_per_class"]) for r in rows if _is_num(r.get("images_per_class"))})
    samp = sorted({int(r["sampling_seed"]) for r in rows
                   if r.get("spread_over") == "training_seed" and _is_num(r.get("sampling_seed"))})
    size = "/".join(map(str, sizes)) or "?"
    pc = f" ({'/'.join(map(str, per_class))} per class)" if per_class else ""
    return [
        f"Each sample set: {size} generated images{pc}, scored against {defs.get('n_reals', '?')} real target images "
        f"of the {defs.get('real_split', '?')} split.",
        f"Frozen rows: one model sampled with {_seed_counts(rows, 'sampling_seed')} sampling seeds (their spread is "
        f"sampling noise). Adapted rows: one sample set per training seed ({_seed_counts(rows, 'training_seed')} "
        f"seeds), each sampled with one fixed sampling seed{f' ({samp[0]})' if len(samp) == 1 else ''} (their spread "
        f"is the training-seed spread).",
        "Every number is mean ± std (n=N): the mean over a row's sample sets, the sample standard deviation (ddof=1) "
        "and the number of sets; a number without ± is the same for every seed.",
        f"CLIP score = {defs.get('clip_score', '?')}, conditioning text \"{defs.get('text_template', '?')}\" with the "
        f"class name.",
    ]


def _definition_keys(rows, columns) -> list[str]:
    return columns + [k for k in ("probe_real_acc", "judge_real_acc", "judge_probe_agreement",
                                  "judge_probe_real_agreement", "n_seeds", "images_per_set")
                      if k not in columns and any(k in r for r in rows)]


def _judges_note(rows: Sequence[dict], defs: dict) -> str:
    """The class judges on the real images: the probe's accuracy (the ceiling for class acc) and, with
    metrics.class_judge, the adapted classifier's accuracy and how often the two agree."""
    probe = next((r for r in rows if _is_num(r.get("probe_real_acc"))), None)
    if probe is None:
        return ""
    text = (f"Linear-probe accuracy on the real images (the ceiling for class acc): "
            f"{format_value('probe_real_acc', probe['probe_real_acc'])}.")
    judge = next((r for r in rows if _is_num(r.get("judge_real_acc"))), None)
    if judge is not None:
        info = defs.get("class_judge") or {}
        who = f"{info.get('method', 'adapted classifier')} ({info.get('folder', '?')}, seed {info.get('seed', '?')})"
        text += (f" Second judge, {who}: {format_value('judge_real_acc', judge['judge_real_acc'])} on the same "
                 f"images; the two judges give the same class to "
                 f"{format_value('judge_probe_real_agreement', judge.get('judge_probe_real_agreement'))} of them.")
        rho = info.get("rank_correlation_rows")
        if _is_num(rho):
            text += f" Over the rows, the two judges' class accuracies have Spearman rank correlation {rho:.2f}."
    return text


# --------------------------------------------------------------------------------------------------------------
# the report


def build_report(
    scores_dir: str | os.PathLike,
    samples_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    report_params: ReportParams = ReportParams(),
    comparisons: Sequence[Sequence[str]] = DEFAULT_COMPARISONS,
    order: Optional[Sequence[str]] = None,
    target_dir: Optional[str | os.PathLike] = None,
    memory_benchmark: Optional[str | os.PathLike] = None,
    classify_dir: Optional[str | os.PathLike] = None,
    classify_order: Optional[Sequence[str]] = None,
    classify_datasets: Optional[Sequence[str]] = None,
    captions: Optional[str | os.PathLike] = None,
    targets_dir: Optional[str | os.PathLike] = None,
    target_names: Optional[Sequence[str]] = None,
) -> Path:
    """Write ``out_dir`` (atomically): index.html, report.md, plots/*.png. Returns the index.html path.

    ``comparisons``: pairs (a, b) of row names (or an averaged variant's prefix) for the headline comparisons.
    ``order``: row order (default: the score stage's). ``memory_benchmark``: ``benchmarks/mvp_memory.py``'s result
    file; when it exists, its MVP / prefilled peak-memory ratio at VAR-d16 size is reported beside the ratio of this
    pipeline's own training records. ``classify_dir``: the classify@<config>-<dataset> stages' JSONs (results/classify), shown as
    the classification section (configurations in ``classify_order``, dataset columns in ``classify_datasets``).
    ``captions``: the caption stage's captions.parquet; the settings say where the caption level of the texts came
    from, and when samples had none and fell back to the sentence level. ``targets_dir``: the extra_target@<name>
    stages' summaries (results/targets), shown as the "Other targets" section (targets in ``target_names``, the names
    of params extra_targets; summaries of other targets are left out with a warning)."""
    from ..sampling import SampleSet
    from ..metrics.scoring import fd_key
    from ..captions.run import caption_note

    rp = report_params
    summary = load_table_rows(scores_dir, order=order)
    set_rows = load_set_rows(scores_dir)
    rows = with_averaged_rows(summary, set_rows)
    defs_path = Path(scores_dir) / "definitions.json"
    defs = read_json(defs_path) if defs_path.is_file() else {}
    columns = table_columns(rows)
    fk = next((fd_key(r) for r in rows if fd_key(r)), None)
    keys = headline_keys(rows)
    text = {
        "settings": _settings(rows, defs) + [n for n in [caption_note(captions)] if n],
        "noise": sampling_noise_lines(summary, keys),
        "compare": comparison_lines(rows, list(comparisons), keys),
        "best": best_lines(rows, keys),
        "memory": memory_lines(rows, memory_benchmark),
        "averaged": any(r.get("averaged_from") for r in rows),
    }
    classify = load_classify_results(classify_dir, classify_order, classify_datasets)
    text["classify_md"], text["classify_html"] = classify_markdown(classify), classify_html(classify)
    targets = load_target_results(targets_dir, target_names)
    text["targets_md"], text["targets_html"] = targets_markdown(targets), targets_html(targets)
    with atomic_dir(out_dir) as tmp:
        plots = tmp / "plots"
        plots.mkdir()
        figs: dict[str, list[tuple[str, Path]]] = {"grids": [], "curves": [], "fd": []}
        # sample grids: the real target images first, for reference
        if target_dir is not None:
            try:
                from ..datasets.shards import load_split

                real = load_split(target_dir, defs.get("real_split") or "test")
                g = image_grid(real.images, real.labels, per_class=rp.grid_images_per_class,
                               max_classes=rp.grid_max_classes, scale=rp.grid_scale)
                figs["grids"].append((f"real target images ({defs.get('real_split', '?')} split)",
                                      save_grid(plots / "grid-real.png", g)))
            except Exception as err:  # the report still renders without the reference grid
                log.warning("no real-image grid: %s", err)
        for r in summary:
            name = r["row"]
            sdir = _first_set_dir(samples_dir, r)
            if sdir is None:
                log.warning("no sample set for %s in %s: no grid", name, samples_dir)
                continue
            s = SampleSet(sdir)
            seed_word = {"training_seed": "training seed", "sampling_seed": "sampling seed"}.get(
                r.get("spread_over"), "seed")
            label = f"{name} ({seed_word} {sdir.name.removeprefix('seed-')})"
            g = image_grid(s.load_images(), s.labels, per_class=rp.grid_images_per_class,
                           max_classes=rp.grid_max_classes, scale=rp.grid_scale)
            figs["grids"].append((label, save_grid(plots / f"grid-{name}.png", g)))
            p = plot_curves(plots / f"curves-{name}.png", discover_curves(s.record), f"{label}: training curves")
            if p is not None:
                figs["curves"].append((label, p))
        if fk is not None:
            p = plot_fd_vs_params(plots / "fd_vs_params.png", summary, fk)
            if p is not None:
                figs["fd"].append((f"{metric_info(fk).label} vs trainable parameters", p))
        (tmp / "report.md").write_text(_markdown(rows, columns, defs, figs, rp, text), encoding="utf-8")
        (tmp / "index.html").write_text(_html(rows, columns, defs, figs, rp, text), encoding="utf-8")
    log.info("report with %d rows written to %s", len(summary), out_dir)
    return Path(out_dir) / "index.html"


def _markdown(rows, columns, defs, figs, rp: ReportParams, text: dict) -> str:
    out = [f"# {rp.title}", ""]
    if _space_note(defs):
        out += [f"> **Feature space.** {_space_note(defs)}.", ""]
    out += [" ".join(text["settings"]), ""]
    out += ["**Sampling noise** (measured once: std over the sampling seeds of one frozen model): "
            + "; ".join(text["noise"]), ""]
    out += ["## Headline comparisons", ""]
    out += [f"- {line}" for line in text["compare"]] or ["- (no pairs given)"]
    out += [""] + [f"- {line}" for line in text["best"]]
    out += ["", "## Metrics", "", f"Best value per column in **bold** (↑ higher is better, ↓ lower is better). "
                                  f"{BEST_RULE}", ""]
    if text["averaged"]:
        out += [AVERAGE_RULE, ""]
    out += [markdown_table(rows, columns)]
    if text["memory"]:
        out += ["## Peak training memory: MVP against the prefilled prompt", ""] + [f"- {m}" for m in text["memory"]]
        out.append("")
    if text.get("classify_md"):
        out += [text["classify_md"]]
    if text.get("targets_md"):
        out += [text["targets_md"]]
    if figs["fd"]:
        out += ["## FD against trainable parameters", ""] + [f"![{t}](plots/{p.name})" for t, p in figs["fd"]] + [""]
    if figs["grids"]:
        out += ["## Samples", "", "The first seed's sample set of each row; one row per class."]
        for t, p in figs["grids"]:
            out += ["", f"### {t}", "", f"![{t}](plots/{p.name})"]
        out.append("")
    if figs["curves"]:
        out += ["## Training curves", ""]
        for t, p in figs["curves"]:
            out += [f"![{t}](plots/{p.name})", ""]
    out += ["## Definitions", ""]
    for k in _definition_keys(rows, columns):
        out.append(f"- **{metric_info(k).label}** (`{k}`): {metric_info(k).definition}")
    if defs.get("spread"):
        out.append(f"- **spread** (`<key>_std`): {defs['spread']}")
    note = _judges_note(rows, defs)
    if note:
        out += ["", note]
    return "\n".join(out) + "\n"


def _html(rows, columns, defs, figs, rp: ReportParams, text: dict) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(rp.title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(rp.title)}</h1>"]
    if _space_note(defs):
        parts.append(f"<div class='note'><b>Feature space.</b> {e(_space_note(defs))}.</div>")
    parts.append("<p>" + " ".join(e(s) for s in text["settings"]) + "</p>")
    parts.append("<p><b>Sampling noise</b> (measured once: std over the sampling seeds of one frozen model): "
                 + "; ".join(e(s) for s in text["noise"]) + "</p>")
    parts.append("<h2>Headline comparisons</h2><ul>"
                 + ("".join(f"<li>{e(s)}</li>" for s in text["compare"]) or "<li>(no pairs given)</li>") + "</ul>")
    if text["best"]:
        parts.append("<ul>" + "".join(f"<li>{e(s)}</li>" for s in text["best"]) + "</ul>")
    parts += ["<h2>Metrics</h2>", f"<p>Best value per column highlighted (↑ higher is better, ↓ lower is better). "
              f"{e(BEST_RULE)} Hover a header for its definition.</p>"]
    if text["averaged"]:
        parts.append(f"<p>{e(AVERAGE_RULE)}</p>")
    parts.append(html_table(rows, columns))
    note = _judges_note(rows, defs)
    if note:
        parts.append(f"<p>{e(note)}</p>")
    if text["memory"]:
        parts.append("<h2>Peak training memory: MVP against the prefilled prompt</h2><ul>"
                     + "".join(f"<li>{e(m)}</li>" for m in text["memory"]) + "</ul>")
    if text.get("classify_html"):
        parts.append(text["classify_html"])
    if text.get("targets_html"):
        parts.append(text["targets_html"])
    if figs["fd"]:
        parts.append("<h2>FD against trainable parameters</h2>")
        parts += [_img_tag(p, t) for t, p in figs["fd"]]
    if figs["grids"]:
        parts.append("<h2>Samples</h2><p>The first seed's sample set of each row; one row per class.</p>"
                     "<div class='grids'>")
        parts += [f"<figure>{_img_tag(p, t)}<figcaption>{e(t)}</figcaption></figure>" for t, p in figs["grids"]]
        parts.append("</div>")
    if figs["curves"]:
        parts.append("<h2>Training curves</h2>")
        parts += [f"<figure>{_img_tag(p, t)}<figcaption>{e(t)}</figcaption></figure>" for t, p in figs["curves"]]
    parts.append("<h2>Definitions</h2><dl>")
    for k in _definition_keys(rows, columns):
        parts.append(f"<dt>{e(metric_info(k).label)} <code>{e(k)}</code></dt><dd>{e(metric_info(k).definition)}</dd>")
    if defs.get("spread"):
        parts.append(f"<dt>spread <code>&lt;key&gt;_std</code></dt><dd>{e(defs['spread'])}</dd>")
    parts.append("</dl></body></html>")
    return "\n".join(parts) + "\n"
