"""The report's "Other targets" section: one table per extra target (params ``extra_targets``), from the
``extra_target@<name>`` stages' summaries (``results/targets/<name>.json``, genvpt/targets/run.py).

Rows are the target's report rows, frozen backbones first, then its adaptation configurations; columns FD (FID or
FD-CLIP, whichever the score stage reported), class accuracy (the linear probe trained on that target's real train
images) and trainable parameters, each ``mean ± std (n=N)`` over the row's seeds, the best of a column marked only
beyond the spread (:data:`genvpt.report.tables.BEST_RULE`). Summaries of targets params no longer names are left out
with a warning, as the classification section does with its results."""
from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from .tables import html_table, markdown_table, read_summaries, is_number as _num

log = logging.getLogger(__name__)

__all__ = ["load_target_results", "target_table_rows", "target_columns", "targets_markdown", "targets_html",
           "TARGETS_INTRO"]

TARGETS_INTRO = (
    "Each extra target (params extra_targets, stage extra_target@<name>) reruns the per-target stages (prepare, "
    "tokenize, adapt, sample, score) on another dataset with the same frozen backbones, tokenizers and CLIP. Rows: "
    "the frozen backbones the target's configurations adapt, then the configurations; every number is mean ± std "
    "(n=N) over the row's seeds (sampling seeds for frozen rows, training seeds for adapted rows).")


def load_target_results(targets_dir: str | os.PathLike | None,
                        names: Optional[Sequence[str]] = None) -> list[dict]:
    """The ``<name>.json`` summaries of ``targets_dir`` (those with a ``rows`` mapping), in ``names`` order when given
    (the names of params extra_targets; others after it, sorted); [] when the folder does not exist. With ``names``
    given, summaries of targets it does not name (a target since removed from params) are left out with a warning."""
    if targets_dir is None or not Path(targets_dir).is_dir():
        return []
    out = read_summaries(sorted(Path(targets_dir).glob("*.json")), "rows", "target", log)
    if names is not None:
        stale = [d for d in out if d["target"] not in names]
        if stale:
            log.warning("extra-target results not in params extra_targets, left out of the report: %s",
                        ", ".join(sorted(d["target"] for d in stale)))
            out = [d for d in out if d["target"] in names]
    pos = {n: i for i, n in enumerate(names or [])}
    return sorted(out, key=lambda d: (pos.get(d["target"], len(pos)), d["target"]))


def target_table_rows(result: dict) -> list[dict]:
    """The summary's rows as table rows (``row``, ``n_seeds``, ``spread_over``, ``<key>``, ``<key>_std``): in the
    summary's row order, frozen backbones first."""
    rows = result.get("rows") or {}
    order = [r for r in (result.get("row_order") or []) if r in rows] + sorted(
        r for r in rows if r not in (result.get("row_order") or []))
    out = [{"row": name, **rows[name]} for name in order]
    return sorted(out, key=lambda r: r.get("kind") != "frozen")  # stable: the summary's order within each kind


def target_columns(result: dict) -> list[str]:
    """FD (the key the score stage reported), class accuracy, trainable parameters: those present."""
    keys = [result.get("fd_key") or "fd_clip", "class_acc", "trainable_params"]
    rows = target_table_rows(result)
    return [k for k in keys if any(_num(r.get(k)) for r in rows)]


def _title(d: dict) -> str:
    ds = d.get("dataset") or {}
    classes = d.get("classes") or []
    what = ds.get("name", "?") + (f" ({ds['path']})" if ds.get("path") else "")
    shown = ", ".join(map(str, classes[:12])) + (", ..." if len(classes) > 12 else "")
    return f"{d['target']}: {what}, {len(classes)} classes ({shown})" if classes else f"{d['target']}: {what}"


def _notes(d: dict) -> list[str]:
    out = []
    if d.get("n_reals") is not None:
        space = {"clip": "CLIP", "inception": "Inception-v3"}.get(d.get("feature_space"), d.get("feature_space") or "?")
        out.append(f"Samples scored against {d['n_reals']} real images of its {d.get('real_split', '?')} split; FD in "
                   f"{space} feature space.")
    if d.get("class_judge"):
        out.append(f"Class accuracy is {d['class_judge']}.")
    probe = next((r.get("probe_real_acc") for r in (d.get("rows") or {}).values() if _num(r.get("probe_real_acc"))),
                 None)
    if probe is not None:
        out.append(f"The probe's accuracy on the real images: {100 * float(probe):.1f}%.")
    psnr = [f"{fam} {split} {splits[split]:.2f} dB" for fam, splits in (d.get("tokenizer_psnr") or {}).items()
            for split in ("val", "test") if _num((splits or {}).get(split))]
    if psnr:
        out.append("Tokenizer reconstruction PSNR on this target: " + ", ".join(psnr) + ".")
    return out


def targets_markdown(results: Sequence[dict]) -> str:
    """The section in markdown ('' without results)."""
    if not results:
        return ""
    out = ["## Other targets", "", TARGETS_INTRO, ""]
    for d in results:
        out += [f"### {_title(d)}", "", " ".join(_notes(d)), "",
                markdown_table(target_table_rows(d), target_columns(d))]
    return "\n".join(out) + "\n"


def targets_html(results: Sequence[dict]) -> str:
    """The section in HTML ('' without results)."""
    if not results:
        return ""
    e = html.escape
    parts = ["<h2>Other targets</h2>", f"<p>{e(TARGETS_INTRO)}</p>"]
    for d in results:
        parts += [f"<h3>{e(_title(d))}</h3>", f"<p>{e(' '.join(_notes(d)))}</p>",
                  html_table(target_table_rows(d), target_columns(d))]
    return "\n".join(parts) + "\n"
