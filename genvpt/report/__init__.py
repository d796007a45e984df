"""The report: the papers' tables in miniature (configurations x metrics, best per column marked), a sample grid per
configuration, training curves and FD against trainable parameters, as report/index.html (self-contained) and
report/report.md; and :func:`publish_report_artifact` for the Prefect flow."""
from .artifacts import publish_report_artifact
from .build import build_report, load_table_rows
from .tables import best_per_column, markdown_table, table_columns

__all__ = ["build_report", "load_table_rows", "publish_report_artifact", "best_per_column", "markdown_table",
           "table_columns"]
