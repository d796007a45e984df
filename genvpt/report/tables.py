"""The metrics table: which columns, which value is best in each, and markdown / HTML renderings."""
from __future__ import annotations

import html
import math
from typing import Any, Optional, Sequence

from ..metrics.registry import metric_info

__all__ = ["TABLE_KEYS", "table_columns", "best_per_column", "format_value", "markdown_table", "html_table"]

# column order of the main table; only the keys present in the rows are shown
TABLE_KEYS = (
    "fid", "fd_clip", "kid_mean", "kd_clip_mean", "is_mean", "is_clip_mean", "precision", "precision_clip",
    "recall", "recall_clip", "clip_score", "diversity_lpips", "diversity_clip", "class_acc", "trainable_params",
    "trainable_pct", "train_time_s", "train_peak_memory_mb", "sample_time_per_image_s", "sample_peak_memory_mb",
)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def table_columns(rows: Sequence[dict], keys: Sequence[str] = TABLE_KEYS) -> list[str]:
    """The keys of ``keys`` that at least one row holds a number for, then any other ranked metric present."""
    present = [k for k in keys if any(_is_num(r.get(k)) for r in rows)]
    extra = sorted({k for r in rows for k, v in r.items()
                    if k not in present and _is_num(v) and metric_info(k).higher_is_better is not None})
    return present + extra


def best_per_column(rows: Sequence[dict], columns: Sequence[str]) -> dict[str, set[int]]:
    """For each ranked column (higher_is_better not None), the indices of rows holding the best value (ties: all;
    a column where every row ties has no best)."""
    best: dict[str, set[int]] = {}
    for c in columns:
        hib = metric_info(c).higher_is_better
        vals = [(i, float(r[c])) for i, r in enumerate(rows) if _is_num(r.get(c))]
        if hib is None or len(vals) < 2:
            continue
        target = max(v for _, v in vals) if hib else min(v for _, v in vals)
        winners = {i for i, v in vals if math.isclose(v, target, rel_tol=1e-9, abs_tol=1e-12)}
        if len(winners) < len(vals):  # when every row ties, nothing is best
            best[c] = winners
    return best


def format_value(key: str, v: Any) -> str:
    if not _is_num(v):
        return "–"
    fmt = metric_info(key).fmt
    try:
        if fmt in ("d", ",d"):
            return format(int(round(float(v))), fmt)
        return format(float(v), fmt)
    except (ValueError, TypeError):
        return str(v)


def _header(c: str) -> str:
    hib = metric_info(c).higher_is_better
    arrow = " ↑" if hib is True else " ↓" if hib is False else ""
    return metric_info(c).label + arrow


def markdown_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None, *, name_key: str = "config") -> str:
    """GitHub markdown table; best value per ranked column in bold."""
    columns = list(columns) if columns is not None else table_columns(rows)
    best = best_per_column(rows, columns)
    lines = ["| " + " | ".join([name_key] + [_header(c) for c in columns]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for i, r in enumerate(rows):
        cells = [str(r.get(name_key, i))]
        for c in columns:
            s = format_value(c, r.get(c))
            cells.append(f"**{s}**" if i in best.get(c, ()) else s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[dict], columns: Optional[Sequence[str]] = None, *, name_key: str = "config") -> str:
    columns = list(columns) if columns is not None else table_columns(rows)
    best = best_per_column(rows, columns)
    head = "".join(f'<th title="{html.escape(metric_info(c).definition)}">{html.escape(_header(c))}</th>'
                   for c in columns)
    body = []
    for i, r in enumerate(rows):
        tds = [f"<th>{html.escape(str(r.get(name_key, i)))}</th>"]
        for c in columns:
            s = html.escape(format_value(c, r.get(c)))
            tds.append(f'<td class="best">{s}</td>' if i in best.get(c, ()) else f"<td>{s}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<table class="metrics"><thead><tr><th>{html.escape(name_key)}</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
