"""params.yaml ``remote:``: the DVC remote the flow shares stage outputs through (flows/dvc_stages.py).

With a remote, the flow pulls a stage's outputs before deciding whether the stage is stale and pushes them after it
ran, so a second machine (another clone of the same commit, dvc.lock included) restores what the first one computed
instead of computing it again. The remote itself is DVC's (``dvc remote add``, in ``.dvc/config`` or, with
credentials, ``.dvc/config.local``); params only choose which one and what the flow does with it.
"""
from __future__ import annotations

import re
from typing import Optional

from pydantic import field_validator

from .schema import StrictModel

__all__ = ["RemoteParams"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a DVC remote name we accept (what `dvc remote add` names)


class RemoteParams(StrictModel):
    """Which DVC remote the flow pulls from and pushes to, and whether it does either."""

    # a remote of `dvc remote list`; null: DVC's default remote (`dvc remote add -d`) when one is set, else none
    name: Optional[str] = None
    pull: bool = True   # before deciding staleness: restore a stage's outputs from the remote when only they are missing
    push: bool = True   # after a stage ran (and when it is up to date): send its cached outputs to the remote

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _NAME.match(v):
            raise ValueError("must be a DVC remote name (letters, digits, '_', '.', '-'; as in `dvc remote list`) "
                             "or null")
        return v
