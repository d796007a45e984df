"""Shared helpers for benchmarks: their settings against params.yaml, machine and commit info, and atomic result files
under benchmarks/results/.

Every benchmark module defines

* ``settings(params, args=None) -> dict``: every setting it runs with, flat. A key that is a params.yaml path
  (``generator.var.depth``) holds the value the benchmark uses for that key; any other key (``benchmark.batch_size``,
  ``d16.var``) names a setting params.yaml does not have;
* ``declared_overrides: dict[str, str]``: key -> why, for every setting that is not params.yaml's: each non-params
  key, and each params key the benchmark deliberately runs at another value.

:func:`check_settings` lists what breaks that contract (tests/test_benchmarks_params.py runs it for every
benchmark), and :func:`save_results` writes, next to the results, the settings, which of them are declared, any
undeclared difference from params.yaml (a command-line override), the commit and the machine.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from genvpt.io import write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SMOKE_RESULTS = Path(tempfile.gettempdir()) / "genvpt-bench-smoke"  # --smoke runs never replace committed results
_MISSING = object()
_ABSENT = object()
_LOAD_AT_IMPORT = os.getloadavg() if hasattr(os, "getloadavg") else None


def load_repo_params(path: Optional[str | os.PathLike] = None):
    """The validated params.yaml of this checkout (or ``path``)."""
    from genvpt.config import load_params

    return load_params(path or ROOT / "params.yaml")


# ---------------------------------------------------------------------------------------------------------- settings


def _is_model(v: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(v, BaseModel)


def plain(v: Any) -> Any:
    """JSON-like value: models -> dicts, tuples -> lists."""
    if hasattr(v, "model_dump"):
        return v.model_dump(mode="json")
    if isinstance(v, Mapping):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def params_value(params: Any, key: str, default: Any = _MISSING) -> Any:
    """The value at dotted ``key`` of the params (a model or a mapping); KeyError (or ``default``) if absent."""
    cur = params
    for part in key.split("."):
        if _is_model(cur):
            if part not in type(cur).model_fields:
                break
            cur = getattr(cur, part)
        elif isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            break
    else:
        return plain(cur)
    if default is _MISSING:
        raise KeyError(key)
    return default


def is_params_key(params: Any, key: str) -> bool:
    return params_value(params, key, _ABSENT) is not _ABSENT


def from_params(params: Any, *keys: str) -> dict[str, Any]:
    """``{key: params value}`` for each dotted key."""
    return {k: params_value(params, k) for k in keys}


def block(params: Any, prefix: str, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every leaf of the params block at ``prefix`` as ``{"prefix.leaf": value}`` (sub-blocks flattened, lists kept),
    leaving out the fields named in ``exclude``."""
    out: dict[str, Any] = {}

    def walk(v: Any, key: str) -> None:
        if _is_model(v):
            for f in type(v).model_fields:
                if key == prefix and f in exclude:
                    continue
                walk(getattr(v, f), f"{key}.{f}")
        else:
            out[key] = plain(v)

    cur = params
    for part in prefix.split("."):
        cur = getattr(cur, part)
    walk(cur, prefix)
    return out


def unflatten(settings: Mapping[str, Any], prefix: str) -> dict:
    """The nested mapping of the settings under ``prefix`` (``generator.var.depth`` -> ``{"depth": ...}``)."""
    out: dict = {}
    for k, v in settings.items():
        if not k.startswith(prefix + "."):
            continue
        cur = out
        parts = k[len(prefix) + 1:].split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return out


def check_settings(settings: Mapping[str, Any], declared: Mapping[str, str], params: Any) -> list[str]:
    """What breaks the contract: a params key at another value without a declaration, a non-params key without a
    declaration, a declaration without a reason or for a setting the benchmark does not have."""
    problems = []
    for k, v in settings.items():
        if is_params_key(params, k):
            want = params_value(params, k)
            if plain(v) != want and k not in declared:
                problems.append(f"{k}: runs with {plain(v)!r} but params.yaml has {want!r} (not declared)")
        elif k not in declared:
            problems.append(f"{k}: {plain(v)!r} is not a params.yaml key and not in declared_overrides")
    for k, why in declared.items():
        if k not in settings:
            problems.append(f"declared_overrides[{k!r}] names no setting of this benchmark")
        if not isinstance(why, str) or not why.strip():
            problems.append(f"declared_overrides[{k!r}] gives no reason")
    return problems


def settings_record(settings: Mapping[str, Any], declared: Mapping[str, str], params: Any) -> dict:
    """The settings block written with the results."""
    from_yaml = sorted(k for k in settings if is_params_key(params, k) and k not in declared)
    drift = {k: {"used": plain(settings[k]), "params_yaml": params_value(params, k)} for k in settings
             if is_params_key(params, k) and k not in declared and plain(settings[k]) != params_value(params, k)}
    drift.update({k: {"used": plain(settings[k]), "params_yaml": None} for k in settings
                  if not is_params_key(params, k) and k not in declared})
    return {
        "settings": {k: plain(v) for k, v in settings.items()},
        "settings_from_params_yaml": from_yaml,
        "declared_overrides": {k: {"used": plain(settings.get(k)), "why": why} for k, why in declared.items()},
        "undeclared_differences_from_params_yaml": drift,
    }


# ------------------------------------------------------------------------------------- the embedded default's models


GENERATOR_ARCH_EXCLUDE = ("train", "checkpoint")  # generator.<family> fields that do not size or drive sampling
TOKENIZER_ARCH_EXCLUDE = ("train", "checkpoint")


def source_num_classes(params: Any) -> int:
    """Classes of the source domain the embedded backbones are pretrained on (their class-embedding size)."""
    src = params.source
    if src.class_names:
        return len(src.class_names)
    if src.name == "shapes":
        from genvpt.datasets.params import SHAPE_CLASSES

        return len(src.shapes.classes or SHAPE_CLASSES)
    if src.name == "digits":
        return 10
    classes = ROOT / "data" / "prepared" / "source" / "classes.json"
    if classes.is_file():
        import json

        return len(json.loads(classes.read_text()))
    raise ValueError(f"cannot tell the number of source classes of source.name={src.name!r} "
                     "before `prepare_source` ran")


def embedded_settings(params: Any, families: tuple[str, ...] = ("ar", "maskgit", "var")) -> dict[str, Any]:
    """The params the embedded default's models of ``families`` are built from: ``generator.<family>.*`` (sizes,
    tokenizer and sampling), ``tokenizer.<its tokenizer>.*`` (sizes) and ``source.image_size``, plus the number of
    source classes (``benchmark.num_classes``, derived from ``source``)."""
    st: dict[str, Any] = {"source.image_size": params.source.image_size}
    toks = []
    for fam in families:
        st.update(block(params, f"generator.{fam}", exclude=GENERATOR_ARCH_EXCLUDE))
        tok = params.generator.family(fam).tokenizer
        if tok not in toks:
            toks.append(tok)
    for tok in toks:
        st.update(block(params, f"tokenizer.{tok}", exclude=TOKENIZER_ARCH_EXCLUDE))
    st["benchmark.num_classes"] = source_num_classes(params)
    return st


NUM_CLASSES_WHY = ("derived from source.name / source.shapes.classes / source.class_names (the embedded backbones' "
                   "class count); params have no key holding it")


def embedded_tokenizer(st: Mapping[str, Any], family: str):
    """(tokenizer, its config) of tokenizer ``family`` (vqgan | msvq) as pretrain_tokenizer builds it from params."""
    from genvpt.tokenizers.params import TokenizerParams
    from genvpt.tokenizers.train import build_model as build_tokenizer, model_config

    tp = TokenizerParams.model_validate({family: unflatten(st, f"tokenizer.{family}")})
    cfg = model_config(family, getattr(tp, family), int(st["source.image_size"]))
    return build_tokenizer(family, cfg), cfg


def embedded_generator(st: Mapping[str, Any], family: str):
    """(generator, tokenizer, sampling kwargs) of ``family`` as pretrain_generator builds it from params
    (genvpt.generators.train.build_model), random weights."""
    from genvpt.generators.params import GeneratorParams
    from genvpt.generators.train import build_model
    from genvpt.tokenizers import token_grid

    gp = GeneratorParams.model_validate({family: unflatten(st, f"generator.{family}")})
    tok_family = gp.family(family).tokenizer
    tok, tcfg = embedded_tokenizer(st, tok_family)
    vocab = tcfg.vocab_size if tok_family == "msvq" else tcfg.n_embed
    gen = build_model(family, gp, vocab_size=vocab, grid=token_grid(tok, int(st["source.image_size"])),
                      num_classes=int(st["benchmark.num_classes"]), Cvae=getattr(tcfg, "z_channels", None))
    return gen, tok, gp.family(family).sample.model_dump()


# ------------------------------------------------------------------------------------------------ machine, commit


def git_state() -> dict:
    """``commit`` (git rev-parse HEAD) and ``dirty`` (tracked files changed); read-only git calls."""
    def git(*args: str) -> Optional[str]:
        try:
            r = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), *args], capture_output=True,
                               text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout if r.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    changed = [ln[3:] for ln in (status or "").splitlines() if ln.strip()]
    return {"commit": head.strip() if head else None, "dirty": (bool(changed) if status is not None else None),
            "changed_files": changed[:50]}


def machine() -> dict:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_at_start": [round(x, 2) for x in _LOAD_AT_IMPORT] if _LOAD_AT_IMPORT else None,
        "load_average_at_end": [round(x, 2) for x in load] if load else None,  # 1, 5, 15 min
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def save_results(name: str, results: dict, *, settings: Optional[Mapping[str, Any]] = None,
                 declared: Optional[Mapping[str, str]] = None, params: Any = None, smoke: bool = False) -> Path:
    """Write ``benchmarks/results/<name>.json`` (``--smoke`` runs: a temporary folder; ``$GENVPT_BENCH_RESULTS``: that
    folder) with the commit, the machine and the settings (``settings`` / ``declared`` / ``params``: see the module
    docstring); undeclared differences from params.yaml are printed and recorded. Without ``settings`` the file says
    that the benchmark did not declare them."""
    head = {"git": git_state(), "machine": machine(), "smoke": smoke}
    if settings is None:
        rec = {"settings_declared": False}
        print(f"NOTE {name}: this benchmark does not declare its settings (benchmarks/_common.py)", file=sys.stderr)
    else:
        rec = {"settings_declared": True,
               **settings_record(settings, declared or {}, params if params is not None else load_repo_params())}
        if rec["undeclared_differences_from_params_yaml"]:
            print(f"NOTE {name}: settings differ from params.yaml (command line): "
                  f"{rec['undeclared_differences_from_params_yaml']}", file=sys.stderr)
    out_dir = Path(os.environ["GENVPT_BENCH_RESULTS"]) if os.environ.get("GENVPT_BENCH_RESULTS") else None
    path = (out_dir or (SMOKE_RESULTS if smoke else RESULTS)) / f"{name}.json"
    write_json(path, {**head, **results, **rec} if settings is not None else {**head, **rec, **results})
    print(f"wrote {path}")
    return path


# --------------------------------------------------------------------------------- hyperparameter search (select_*)


def parse_value(text: str) -> Any:
    """A command-line value: a float when it parses as one, true / false / null as YAML spells them, else the text."""
    try:
        return float(text)
    except ValueError:
        return {"true": True, "false": False, "null": None}.get(text.strip().lower(), text)


def add_search_arguments(ap: Any, name: str, values: list) -> None:
    """``--key`` (train.<field> or a method option), ``--values``, ``--set KEY=VALUE`` and ``--name`` of the
    selection benchmarks (benchmarks/select_hparams.py, benchmarks/select_classify.py)."""
    ap.add_argument("--key", default="train.lr", help="train.<field> or a method option")
    ap.add_argument("--values", nargs="+", type=parse_value, default=list(values))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="also set KEY (train.<field> or an option) for every run, e.g. --set init=condition")
    ap.add_argument("--name", default=name, help="results file name under benchmarks/results/")


def search_config(raw: Mapping[str, Any], key: str, value: Any, sets: list[str]) -> dict:
    """A copy of configuration ``raw`` (params.yaml's mapping) with every ``KEY=VALUE`` of ``sets`` and then
    ``key`` = ``value`` applied (``train.<field>`` goes under ``train``, ``train.augment.<field>`` under its
    ``augment``)."""
    import copy

    out = copy.deepcopy(dict(raw))

    def put(k: str, v: Any) -> None:
        if k.startswith("train."):
            *parents, leaf = k.split(".")[1:]
            node = out.setdefault("train", {})
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = v
        else:
            out[k] = v

    for kv in sets:
        k, _, text = kv.partition("=")
        put(k, parse_value(text))
    put(key, value)
    return out
