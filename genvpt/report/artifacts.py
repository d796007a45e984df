"""Publish the metrics table to Prefect (called by the lead's flow after the report stage)."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from .tables import markdown_table, table_columns

__all__ = ["TABLE_KEY", "MARKDOWN_KEY", "publish_report_artifact"]

TABLE_KEY = "genvpt-metrics"  # Prefect artifact keys: lowercase letters, digits and dashes only
MARKDOWN_KEY = "genvpt-report"


def _clean(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def publish_report_artifact(
    table_rows: Sequence[dict],
    *,
    table_key: str = TABLE_KEY,
    markdown_key: str = MARKDOWN_KEY,
    description: Optional[str] = None,
) -> tuple[Any, Any]:
    """Create a Prefect table artifact (one row per report row: means, ``<key>_std`` and ``n_seeds``) and a markdown
    artifact (the report's table, mean ± std (n=N), the best value per column in bold when it is beyond the spread).
    Returns the two artifact ids. ``table_rows``: dicts with a ``row`` key, e.g. :func:`genvpt.report.load_table_rows`."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [{k: _clean(v) for k, v in r.items()} for r in table_rows]
    if not rows:
        raise ValueError("publish_report_artifact: no rows to publish")
    desc = description or ("genvpt metrics: one row per report row, mean and std over its seeds "
                           "(see report/index.html)")
    table_id = create_table_artifact(table=rows, key=table_key, description=desc)
    md = "# genvpt metrics\n\n" + markdown_table(rows, table_columns(rows))
    md_id = create_markdown_artifact(markdown=md, key=markdown_key, description=desc)
    return table_id, md_id
