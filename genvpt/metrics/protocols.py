"""Published evaluation protocols as params overlays (``configs/*.yaml``).

An overlay is a partial params file: its keys replace the same keys of params.yaml and nothing else changes.

    python -m genvpt.metrics.protocols configs/var-imagenet-protocol.yaml [--params params.yaml]

validates the overlay merged over params.yaml (:func:`genvpt.config.validate_params`), checks that the merged
params give exactly the overlay's settings, and prints the ``dvc exp run -S ...`` command that applies it.

``VAR_IMAGENET_PROTOCOL`` is VAR's ImageNet protocol (FoundationVision/VAR README): 50 samples per class,
``cfg=1.5, top_p=0.96, top_k=900, more_smooth=False``, PNG files, scored with OpenAI's ADM evaluator on the
``.npz`` that :mod:`genvpt.metrics.adm_export` writes.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

__all__ = [
    "VAR_IMAGENET_PROTOCOL",
    "VAR_IMAGENET_OVERLAY",
    "load_overlay",
    "merge_overlay",
    "apply_overlay",
    "flatten",
    "overlay_mismatches",
    "dvc_set_flags",
]

ROOT = Path(__file__).resolve().parents[2]
VAR_IMAGENET_OVERLAY = ROOT / "configs" / "var-imagenet-protocol.yaml"

# the settings the overlay file must hold (a test checks the file against this)
VAR_IMAGENET_PROTOCOL: dict[str, Any] = {
    "sample": {"images_per_class": 50},
    "generator": {"var": {"sample": {"cfg": 1.5, "top_k": 900, "top_p": 0.96, "temperature": 1.0}}},
}


def load_overlay(path: str | os.PathLike) -> dict:
    """A params overlay file (YAML mapping)."""
    p = Path(path)
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{p}: a params overlay must be a non-empty mapping of params sections")
    return data


def merge_overlay(base: Optional[Mapping[str, Any]], overlay: Mapping[str, Any]) -> dict:
    """``base`` with ``overlay`` laid over it: mappings merge key by key, any other value replaces the base's."""
    out = copy.deepcopy(dict(base or {}))
    for k, v in overlay.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_overlay(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overlay(overlay: Mapping[str, Any] | str | os.PathLike,
                  params: Mapping[str, Any] | str | os.PathLike | None = None):
    """Validated :class:`genvpt.config.Params` of ``params`` (a mapping, a params.yaml path, or None: ./params.yaml)
    with ``overlay`` (a mapping or an overlay file) merged over it; invalid keys raise ``ConfigError``."""
    from ..config import validate_params

    ov = load_overlay(overlay) if isinstance(overlay, (str, os.PathLike)) else dict(overlay)
    if params is None or isinstance(params, (str, os.PathLike)):
        path = Path(params or os.environ.get("GENVPT_PARAMS", "params.yaml"))
        base = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        source = f"{path} + overlay"
    else:
        base, source = params, "<params> + overlay"
    return validate_params(merge_overlay(base, ov), source)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _get(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.split("."):
        cur = cur[part] if isinstance(cur, Mapping) else getattr(cur, part)
    return cur


def overlay_mismatches(params: Any, overlay: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (wanted, got)}`` for every overlay setting the validated ``params`` do not hold exactly."""
    out = {}
    for key, want in flatten(overlay).items():
        got = _get(params, key)
        if hasattr(got, "model_dump"):
            got = got.model_dump()
        if got != want or isinstance(got, bool) != isinstance(want, bool):
            out[key] = (want, got)
    return out


def _yaml_scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return str(v)
    return json.dumps(v)


def dvc_set_flags(overlay: Mapping[str, Any]) -> list[str]:
    """``["-S", "key=value", ...]`` for ``dvc exp run`` (values in YAML syntax, lists as JSON)."""
    flags: list[str] = []
    for key, v in flatten(overlay).items():
        flags += ["-S", f"{key}={_yaml_scalar(v)}"]
    return flags


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m genvpt.metrics.protocols", description=__doc__.splitlines()[0])
    ap.add_argument("overlay", nargs="?", default=str(VAR_IMAGENET_OVERLAY), help="params overlay YAML")
    ap.add_argument("--params", default=None, help="params file to merge over (default: ./params.yaml)")
    args = ap.parse_args(argv)
    from ..config import ConfigError

    ov = load_overlay(args.overlay)
    try:
        merged = apply_overlay(ov, args.params)
    except ConfigError as err:
        print(f"error: the overlay does not fit the params:\n{err}", file=sys.stderr)
        return 2
    bad = overlay_mismatches(merged, ov)
    if bad:
        print(f"error: merged params differ from the overlay: {bad}", file=sys.stderr)
        return 2
    print(f"{args.overlay}: valid over {args.params or 'params.yaml'}; settings:")
    for k, v in flatten(ov).items():
        print(f"  {k} = {_yaml_scalar(v)}")
    print("apply with:\n  dvc exp run " + " ".join(shlex.quote(f) for f in dvc_set_flags(ov)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
