"""params.yaml ``prefect:``: how flows/pipeline.py runs the DVC stages (docs/architecture.md, "DVC and Prefect").

Kept next to nothing else so genvpt.config can compose it; the flow code (flows/) receives these values as
arguments and never reads params.yaml on its own.
"""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator

from .schema import StrictModel

__all__ = ["PrefectParams", "TRAINING_STAGES"]

# dvc.yaml stages that train a model (foreach base names): with ``training_pool`` set they run on the pool's
# one-worker-per-GPU workers (flows/workers.py); everything else runs where the flow runs.
TRAINING_STAGES = ("pretrain_tokenizer", "pretrain_generator", "pretrain_clip", "pretrain_clip_vit",
                   "train_classifier", "adapt", "classify", "extra_target")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")          # a Prefect work-pool name we accept
_STAGE = re.compile(r"^[A-Za-z0-9_]+(@[^\s]+)?$")            # dvc.yaml stage name, or one foreach instance
_DASK = re.compile(r"^(tcp|tls|ucx|ws|wss|inproc)://[^\s/]+$")  # a Dask scheduler address


class PrefectParams(StrictModel):
    """flows/pipeline.py: task retries, how many independent stale stages run at once, where they run."""

    retries: int = Field(default=1, ge=0)
    retry_delay_seconds: float = Field(default=5.0, ge=0.0)
    max_parallel: int = Field(default=1, ge=1)               # 1 = one stage at a time (DVC's own reproduce)
    threads_per_stage: Optional[int] = Field(default=None, ge=1)  # OMP/MKL threads of each stage command (null: inherit)
    # Prefect task runner of the concurrent path: "thread" (threads in the flow's process) or "dask"
    # (prefect-dask's DaskTaskRunner: a LocalCluster of max_parallel one-thread workers, or dask_address's cluster)
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: Optional[str] = None                        # null: a LocalCluster; else "tcp://host:8786"
    dask_processes: bool = True                               # LocalCluster workers as processes (false: threads)
    # null: every stage runs here. A work-pool name: the training stages run as flow runs of the deployment
    # "genvpt-train-stage/<pool>" on that pool's workers (one per GPU, flows/workers.py)
    training_pool: Optional[str] = None
    training_stages: list[str] = Field(default_factory=lambda: list(TRAINING_STAGES))

    @field_validator("training_pool")
    @classmethod
    def _pool_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _NAME.match(v):
            raise ValueError("must be null or a work-pool name: letters, digits, '_', '.', '-', starting with a "
                             "letter or digit")
        return v

    @field_validator("training_stages")
    @classmethod
    def _stage_names(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not _STAGE.match(s)]
        if bad:
            raise ValueError(f"must list dvc.yaml stage names (e.g. adapt, or adapt@vpt-ar); not names: {bad}")
        return v

    @field_validator("dask_address")
    @classmethod
    def _address(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _DASK.match(v):
            raise ValueError("must be null (a LocalCluster) or a Dask scheduler address such as tcp://host:8786")
        return v
