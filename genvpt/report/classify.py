"""The report's classification section: the PGN paper's "methods x datasets" table in miniature, from the
``classify@<config>-<dataset>`` stages' JSONs (``data/classify/<dataset>/<config>.json``, genvpt/classify/run.py).

Rows are configurations (classification methods), columns are datasets (the prepared target's label, e.g.
``shapes-textured``; one column per dataset the JSONs were trained on), cells top-1 accuracy in % as ``mean ± std
(n=N)`` over the training seeds on the reported split (test; val in a second table: what settings are chosen on).
A cell is bold only when its row beats every other row of that column beyond both spreads (the rule of the generative
table, :data:`genvpt.report.tables.BEST_RULE`). Plus trainable parameters, and the prompt-inversion numbers (token
prompts against the same prompts inverted to RGB patches)."""
from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from .tables import beyond_spread, read_summaries, is_number as _num

log = logging.getLogger(__name__)

__all__ = ["load_classify_results", "classify_rows", "classify_best", "classify_markdown", "classify_html",
           "inversion_rows", "classify_comparisons", "CLASSIFY_COMPARISONS", "CLASSIFY_RULE"]

CLASSIFY_COMPARISONS: tuple[tuple[str, str], ...] = (("pgn", "iip"), ("iip", "zero-shot"), ("pgn", "linear-probe"))
CLASSIFY_RULE = ("Top-1 accuracy (%) of the classifier after training, mean ± sample std (ddof=1) over the training "
                 "seeds (n); bold only when the row is better than every other row of the column beyond both spreads "
                 "(its mean − std above every other row's mean + std). Every method trains on the target's train split "
                 "with the same seeds; settings are chosen on val, the table reports test.")
_INV_COLUMNS = (("top1_tokens", "token prompts"), ("top1_rgb_float", "RGB (float)"), ("top1_rgb_clamp", "RGB [0,1]"),
                ("top1_rgb_uint8", "RGB uint8"), ("agree_uint8", "agreement (uint8)"),
                ("top1_tokens_dropped", "tokens, covered patches dropped"))


def load_classify_results(classify_dir: str | os.PathLike | None, order: Optional[Sequence[str]] = None,
                          dataset_order: Optional[Sequence[str]] = None) -> list[dict]:
    """The ``<dataset>/<config>.json`` (and top-level ``<config>.json``) files of ``classify_dir`` (those with a
    ``top1`` block), in ``order`` of configuration names when given (others after it, sorted); [] when the folder
    does not exist. Within a configuration, datasets (the table's columns) follow ``dataset_order`` (the names of
    params classify.datasets). With ``order`` / ``dataset_order`` given, results of other configurations / datasets
    (left by a configuration since removed from params) are left out with a warning."""
    if classify_dir is None or not Path(classify_dir).is_dir():
        return []
    out = read_summaries(sorted([*Path(classify_dir).glob("*.json"), *Path(classify_dir).glob("*/*.json")]), "top1",
                         "name", log)
    pos = {n: i for i, n in enumerate(order or [])}
    dpos = {n: i for i, n in enumerate(dataset_order or [])}

    # files of configurations / datasets that params no longer name (a removed row or column) are left out, logged
    stale = [d for d in out if (order is not None and d["name"] not in pos)
             or (dataset_order is not None and _column(d) and _column(d) not in dpos)]
    if stale:
        log.warning("classification results not in params classify.configs / classify.datasets, left out of the "
                    "report: %s", ", ".join(sorted(f"{_column(d) or '?'}/{d['name']}" for d in stale)))
        out = [d for d in out if not any(d is x for x in stale)]

    return sorted(out, key=lambda d: (pos.get(d["name"], len(pos)), d["name"], dpos.get(_column(d), len(dpos)),
                                      _column(d)))


def _column(d: dict) -> str:
    """The result's column name in params classify.datasets ("" for a result that does not record it)."""
    return str((d.get("dataset") or {}).get("column") or "")


def _label(d: dict) -> str:
    ds = d.get("dataset") or {}
    return str(ds.get("label") or ds.get("name") or "target")


def _column_labels(results: Sequence[dict]) -> dict[str, str]:
    """Column name (params classify.datasets) -> the table's label: the dataset's own label (``shapes-outlined``,
    ``digits``), followed by the column's name where the label does not already say it (``shapes-textured (target)``,
    ``shapes-flat (held-out-classes)``) or where two columns would otherwise share a label."""
    first: dict[str, str] = {}  # label -> the first column that has it
    out: dict[str, str] = {}
    for d in results:
        col = _column(d) or _label(d)  # a result without a column name is its own label's column
        if col in out:
            continue
        lab = _label(d)
        if col not in lab:
            lab = f"{lab} ({col})"
        owner = first.setdefault(lab, col)
        out[col] = lab if owner == col else f"{lab} ({col})"
    return out


def _column_label(labels: dict[str, str], d: dict) -> str:
    return labels[_column(d) or _label(d)]


def classify_rows(results: Sequence[dict], split: str = "test") -> tuple[list[dict], list[str]]:
    """(rows, dataset columns): one row per configuration, ``{"row", "method", "n_seeds", <dataset>: mean,
    <dataset>_std: std, "trainable_params"}`` with accuracies in %."""
    columns: list[str] = []
    rows: dict[str, dict] = {}
    labels = _column_labels(results)
    for d in results:
        col = _column_label(labels, d)
        if col not in columns:
            columns.append(col)
        row = rows.setdefault(d["name"], {"row": d["name"], "method": d.get("method"), "n_seeds": d.get("n_seeds"),
                                          "trainable_params": d.get("trainable_params"),
                                          "trainable_pct": d.get("trainable_pct")})
        t = (d.get("top1") or {}).get(split) or {}
        if _num(t.get("mean")):
            row[col] = 100.0 * float(t["mean"])
            row[f"{col}_std"] = 100.0 * float(t["std"]) if _num(t.get("std")) else None
            row[f"{col}_n"] = len(t.get("per_seed") or {}) or d.get("n_seeds")
    return list(rows.values()), columns


def _ranked(row: dict, col: str) -> dict:
    return {"n_seeds": row.get(f"{col}_n"), col: row.get(col), f"{col}_std": row.get(f"{col}_std")}


def classify_best(rows: Sequence[dict], columns: Sequence[str]) -> dict[str, int]:
    """Per dataset column, the index of the row whose accuracy beats every other row's beyond both spreads."""
    best: dict[str, int] = {}
    for c in columns:
        cand = [i for i, r in enumerate(rows) if _num(r.get(c))]
        if len(cand) < 2:
            continue
        for i in cand:
            if all(rows[i][c] > rows[j][c] and beyond_spread(_ranked(rows[i], c), _ranked(rows[j], c), c) is True
                   for j in cand if j != i):
                best[c] = i
                break
    return best


def _cell(row: dict, col: str) -> str:
    if not _num(row.get(col)):
        return "–"
    n, s = row.get(f"{col}_n"), row.get(f"{col}_std")
    if _num(s) and _num(n) and int(n) >= 2:
        return f"{row[col]:.1f} ± {s:.1f} (n={int(n)})"
    return f"{row[col]:.1f} (n={int(n) if _num(n) else '?'})"


def _params(row: dict) -> str:
    p = row.get("trainable_params")
    if not _num(p):
        return "–"
    pct = row.get("trainable_pct")
    return f"{int(p):,d}" + (f" ({float(pct):.3g}% of the vision tower)" if _num(pct) and p else "")


def _table(rows: Sequence[dict], columns: Sequence[str]) -> tuple[list[str], list[list[str]], dict[str, int]]:
    head = ["method", "config", *columns, "trainable params"]
    best = classify_best(rows, columns)
    body = [[str(r.get("method") or ""), r["row"], *[_cell(r, c) for c in columns], _params(r)] for r in rows]
    return head, body, best


def inversion_rows(results: Sequence[dict]) -> list[dict]:
    """One row per configuration with an ``inversion`` block: its settings and every summarised number."""
    out = []
    labels = _column_labels(results)
    for d in results:
        inv = d.get("inversion")
        if isinstance(inv, dict):
            out.append({"row": d["name"], "dataset": _column_label(labels, d), **inv})
    return out


def _inv_cell(v: Any) -> str:
    if not isinstance(v, dict) or not _num(v.get("mean")):
        return "–"
    n = len(v.get("per_seed") or {})
    s = v.get("std")
    std = f" ± {100 * float(s):.1f}" if _num(s) else ""
    return f"{100 * float(v['mean']):.1f}{std} (n={n})"


def _inv_table(inv: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    cols = [(k, lab) for k, lab in _INV_COLUMNS if any(isinstance(r.get(k), dict) for r in inv)]
    head = ["config", "dataset", "split", "placement", *[lab for _, lab in cols], "token error after ln_pre"]
    body = []
    for r in inv:
        err = r.get("post_ln_rel_err_mean")
        err_s = f"{float(err['mean']):.2e}" if isinstance(err, dict) and _num(err.get("mean")) else "–"
        body.append([r["row"], r["dataset"], str(r.get("split", "?")), str(r.get("placement", "?")),
                     *[_inv_cell(r.get(k)) for k, _ in cols], err_s])
    return head, body


def classify_comparisons(rows: Sequence[dict], columns: Sequence[str],
                         pairs: Sequence[Sequence[str]] = CLASSIFY_COMPARISONS) -> list[str]:
    """For each pair present and each dataset: both cells, the difference, and whether it is beyond the spread."""
    by = {r["row"]: r for r in rows}
    out = []
    for a_name, b_name in pairs:
        a, b = by.get(a_name), by.get(b_name)
        if a is None or b is None:
            continue
        for c in columns:
            if not (_num(a.get(c)) and _num(b.get(c))):
                continue
            d = float(a[c]) - float(b[c])
            beyond = beyond_spread(_ranked(a, c), _ranked(b, c), c)
            if beyond is None:
                verdict = "spread unknown (a row has a single seed): not decided"
            elif beyond:
                verdict = f"beyond the spread: {a_name if d > 0 else b_name} is better"
            else:
                verdict = "within the spread"
            out.append(f"{a_name} vs {b_name} on {c}: {_cell(a, c)} vs {_cell(b, c)}; difference {d:+.1f} points: "
                       f"{verdict}")
    return out


def _section_data(results: Sequence[dict]) -> dict[str, Any]:
    test_rows, columns = classify_rows(results, "test")
    val_rows, val_cols = classify_rows(results, "val")
    clip = next((d.get("clip") for d in results if isinstance(d.get("clip"), dict)), {}) or {}
    return {"test": (test_rows, columns), "val": (val_rows, val_cols), "inv": inversion_rows(results),
            "compare": classify_comparisons(test_rows, columns), "clip": clip,
            "template": next((d.get("template") for d in results if d.get("template")), None)}


def _intro(data: dict) -> str:
    clip = data["clip"]
    model = clip.get("model", "?")
    return (f"PGN and its baselines adapt the frozen CLIP `{model}` (`{clip.get('file', '?')}`, stage "
            f"pretrain_clip_vit) to each dataset's classes (stage classify@<config>-<dataset>); class prompts "
            f"\"{data['template'] or '?'}\". Scoring of generated samples keeps its own CLIP (params clip). "
            + CLASSIFY_RULE)


def classify_markdown(results: Sequence[dict]) -> str:
    """The section in markdown ('' without results)."""
    if not results:
        return ""
    data = _section_data(results)
    out = ["## Classification: PGN and baselines on a frozen CLIP ViT", "", _intro(data), ""]
    for split, title in (("test", "Top-1 accuracy (%), test split"), ("val", "Top-1 accuracy (%), val split")):
        rows, cols = data[split]
        if not cols:
            continue
        head, body, best = _table(rows, cols)
        out += [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, cells in enumerate(body):
            cells = [f"**{c}**" if j >= 2 and j - 2 < len(cols) and best.get(cols[j - 2]) == i else c
                     for j, c in enumerate(cells)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if data["compare"]:
        out += [f"- {line}" for line in data["compare"]] + [""]
    if data["inv"]:
        head, body = _inv_table(data["inv"])
        out += ["### Prompt inversion: token prompts against RGB prompts", "",
                "Top-1 accuracy (%) of the trained token prompts and of the same prompts inverted to pixel patches "
                "through the pseudo-inverse of the patch embedding (genvpt/classify/inversion.py) and placed in the "
                "image; agreement = share of images where both predict the same class.", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in body]
        out.append("")
    return "\n".join(out) + "\n"


def classify_html(results: Sequence[dict]) -> str:
    """The section in HTML ('' without results)."""
    if not results:
        return ""
    e = html.escape
    data = _section_data(results)
    parts = ["<h2>Classification: PGN and baselines on a frozen CLIP ViT</h2>", f"<p>{e(_intro(data))}</p>"]
    for split, title in (("test", "Top-1 accuracy (%), test split"), ("val", "Top-1 accuracy (%), val split")):
        rows, cols = data[split]
        if not cols:
            continue
        head, body, best = _table(rows, cols)
        parts.append(f"<h3>{e(title)}</h3><table class=\"metrics\"><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
        for i, cells in enumerate(body):
            tds = []
            for j, c in enumerate(cells):
                is_best = j >= 2 and j - 2 < len(cols) and best.get(cols[j - 2]) == i
                tds.append(f"<th>{e(c)}</th>" if j < 2 else
                           f"<td class=\"best\">{e(c)}</td>" if is_best else f"<td>{e(c)}</td>")
            parts.append("<tr>" + "".join(tds) + "</tr>")
        parts.append("</tbody></table>")
    if data["compare"]:
        parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in data["compare"]) + "</ul>")
    if data["inv"]:
        head, body = _inv_table(data["inv"])
        parts.append("<h3>Prompt inversion: token prompts against RGB prompts</h3><table class=\"metrics\"><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
                     + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in body)
                     + "</tbody></table>")
    return "\n".join(parts) + "\n"
