"""The metrics table: which columns, which row is best in each (only beyond the spread over seeds), and markdown /
HTML renderings where every number reads ``mean ± std (n=N)``.

Rows are summary rows (``genvpt.metrics.scoring.summarize``): ``row``, ``n_seeds``, ``<key>`` (mean over the row's
seeds) and ``<key>_std`` (sample std, ddof=1). Rows with ``averaged_from`` (variants shown averaged) are displayed but
never ranked."""
from __future__ import annotations

import html
import math
from typing import Any, Optional, Sequence

from ..metrics.registry import metric_info

__all__ = ["TABLE_KEYS", "BEST_RULE", "table_columns", "spread_of", "beyond_spread", "best_per_column",
           "format_value", "format_cell", "spread_label", "markdown_table", "html_table"]

# column order of the main table; only the keys present in the rows are shown
TABLE_KEYS = (
    "fid", "fd_clip", "kid_mean", "kd_clip_mean", "is_mean", "is_clip_mean", "precision", "precision_clip",
    "recall", "recall_clip", "clip_score", "diversity_lpips", "diversity_clip", "class_acc", "class_acc_judge",
    "texture_share", "trainable_params", "trainable_pct", "train_time_s", "train_peak_memory_mb",
    "sample_time_per_image_s", "sample_peak_memory_mb",
)

BEST_RULE = (
    "A value is marked best only when that row is better than every other row beyond the spread: for a "
    "lower-is-better metric its mean + std is below every other row's mean − std (higher-is-better: its mean − std "
    "is above every other row's mean + std), std being the sample std over each row's seeds. A row with a single seed "
    "has no spread, so a column with such a row marks nothing; averaged variant rows are not ranked."
)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool): a value a table cell shows as a number."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def table_columns(rows: Sequence[dict], keys: Sequence[str] = TABLE_KEYS) -> list[str]:
    """The keys of ``keys`` that at least one row holds a number for, then any other ranked metric present."""
    present = [k for k in keys if any(is_number(r.get(k)) for r in rows)]
    extra = sorted({k for r in rows for k, v in r.items()
                    if k not in present and is_number(v) and metric_info(k).higher_is_better is not None})
    return present + extra


def spread_of(row: dict, key: str) -> Optional[float]:
    """The row's std of ``key`` over its seeds; None when unknown (one seed, or no std recorded)."""
    n = row.get("n_seeds")
    s = row.get(f"{key}_std")
    if not is_number(n) or int(n) < 2 or not is_number(s):
        return None
    return float(s)


def beyond_spread(a: dict, b: dict, key: str) -> Optional[bool]:
    """Whether rows ``a`` and ``b`` differ in ``key`` by more than both spreads: |mean_a − mean_b| > std_a + std_b
    (the intervals mean ± std do not overlap). None when a value or a spread is unknown."""
    if not (is_number(a.get(key)) and is_number(b.get(key))):
        return None
    sa, sb = spread_of(a, key), spread_of(b, key)
    if sa is None or sb is None:
        return None
    return abs(float(a[key]) - float(b[key])) > sa + sb


def best_per_column(rows: Sequence[dict], columns: Sequence[str]) -> dict[str, set[int]]:
    """For each ranked column (higher_is_better not None), the index of the row that is better than every other
    ranked row beyond the spread (:data:`BEST_RULE`); columns without such a row are absent. Rows with
    ``averaged_from`` are not ranked."""
    best: dict[str, set[int]] = {}
    for c in columns:
        hib = metric_info(c).higher_is_better
        cand = [i for i, r in enumerate(rows) if is_number(r.get(c)) and not r.get("averaged_from")]
        if hib is None or len(cand) < 2:
            continue
        for i in cand:
            mi = float(rows[i][c])
            ok = True
            for j in cand:
                if j == i:
                    continue
                mj = float(rows[j][c])
                better = mi > mj if hib else mi < mj
                if not better or beyond_spread(rows[i], rows[j], c) is not True:
                    ok = False
                    break
            if ok:
                best[c] = {i}
                break
    return best


def format_value(key: str, v: Any) -> str:
    if not is_number(v):
        return "–"
    fmt = metric_info(key).fmt
    try:
        if fmt in ("d", ",d"):
            return format(int(round(float(v))), fmt)
        return format(float(v), fmt)
    except (ValueError, TypeError):
        return str(v)


def _std_fmt(key: str) -> str:
    """Stds of count-like keys keep decimals (a std of 0.47 trainable parameters is not 0)."""
    return ".2g" if metric_info(key).fmt in ("d", ",d") else metric_info(key).fmt


def format_cell(key: str, row: dict) -> str:
    """``mean ± std (n=N)``; ``mean (n=1)`` without a spread; an unranked number that every seed shares (trainable
    parameters, ...) alone; plain value for rows without seeds."""
    v = row.get(key)
    if not is_number(v):
        return "–"
    m = format_value(key, v)
    n = row.get("n_seeds")
    if not is_number(n):
        return m
    s = row.get(f"{key}_std")
    if is_number(s) and int(n) >= 2:
        if float(s) == 0.0 and metric_info(key).higher_is_better is None:
            return m
        return f"{m} ± {format(float(s), _std_fmt(key))} (n={int(n)})"
    if metric_info(key).higher_is_better is None and int(n) >= 2:
        return m
    return f"{m} (n={int(n)})"


def spread_label(row: dict) -> str:
    """What a row's n and spread are: '3 training seeds', '3 sampling seeds', '9 sets of 3 variants'."""
    n = row.get("n_seeds")
    if not is_number(n):
        return "–"
    n = int(n)
    if row.get("averaged_from"):
        return f"{n} sets of {len(row['averaged_from'])} variants"
    what = {"training_seed": "training seed", "sampling_seed": "sampling seed"}.get(row.get("spread_over"), "seed")
    return f"{n} {what}{'s' if n != 1 else ''}"


def _header(c: str) -> str:
    hib = metric_info(c).higher_is_better
    arrow = " ↑" if hib is True else " ↓" if hib is False else ""
    return metric_info(c).label + arrow


def _name(r: dict, name_key: str, i: int) -> str:
    return str(r.get(name_key, r.get("config", i)))


def markdown_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None, *, name_key: str = "row") -> str:
    """GitHub markdown table: a row per report row, its seed count, every value as mean ± std (n=N); the best value
    of a ranked column (beyond the spread) in bold."""
    columns = list(columns) if columns is not None else table_columns(rows)
    best = best_per_column(rows, columns)
    with_n = any(is_number(r.get("n_seeds")) for r in rows)
    lines = ["| " + " | ".join([name_key] + (["n"] if with_n else []) + [_header(c) for c in columns]) + " |",
             "|" + "---|" * (len(columns) + 1 + with_n)]
    for i, r in enumerate(rows):
        cells = [_name(r, name_key, i)] + ([spread_label(r)] if with_n else [])
        for c in columns:
            s = format_cell(c, r)
            cells.append(f"**{s}**" if i in best.get(c, ()) else s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None, *, name_key: str = "row") -> str:
    columns = list(columns) if columns is not None else table_columns(rows)
    best = best_per_column(rows, columns)
    with_n = any(is_number(r.get("n_seeds")) for r in rows)
    head = "".join(f'<th title="{html.escape(metric_info(c).definition)}">{html.escape(_header(c))}</th>'
                   for c in columns)
    n_head = '<th title="sample sets of the row and what varies between them">n</th>' if with_n else ""
    body = []
    for i, r in enumerate(rows):
        cls = ' class="avg"' if r.get("averaged_from") else ""
        tds = [f"<th>{html.escape(_name(r, name_key, i))}</th>"]
        if with_n:
            tds.append(f"<td>{html.escape(spread_label(r))}</td>")
        for c in columns:
            s = html.escape(format_cell(c, r))
            tds.append(f'<td class="best">{s}</td>' if i in best.get(c, ()) else f"<td>{s}</td>")
        body.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
    return (f'<table class="metrics"><thead><tr><th>{html.escape(name_key)}</th>{n_head}{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def read_summaries(paths: Sequence[Any], has: str, name_key: str, log: Any) -> list[dict]:
    """The JSON summaries among ``paths`` that are mappings with a mapping under ``has`` (others are skipped; an
    unreadable file with a warning on ``log``), each with ``name_key`` defaulting to its file's stem."""
    from pathlib import Path

    from ..io import read_json

    out = []
    for p in paths:
        try:
            d = read_json(p)
        except ValueError as err:
            log.warning("%s not readable: %s", p, err)
            continue
        if isinstance(d, dict) and isinstance(d.get(has), dict):
            d.setdefault(name_key, Path(p).stem)
            out.append(d)
    return out
