"""genvpt: prompt tuning of frozen image generators, reproducible with DVC and Prefect."""

__version__ = "0.1.0"
