"""The report: the papers' tables in miniature (report rows x metrics, every number mean ± std over seeds, the best per
column marked only beyond the spread), headline comparisons, the sampling noise, a sample grid per row, training
curves and FD against trainable parameters, as report/index.html (self-contained) and report/report.md; and
:func:`publish_report_artifact` for the Prefect flow."""
from .artifacts import publish_report_artifact
from .build import DEFAULT_COMPARISONS, build_report, load_set_rows, load_table_rows
from .tables import BEST_RULE, best_per_column, beyond_spread, markdown_table, table_columns

__all__ = ["build_report", "load_table_rows", "load_set_rows", "publish_report_artifact", "best_per_column",
           "beyond_spread", "markdown_table", "table_columns", "DEFAULT_COMPARISONS", "BEST_RULE"]
