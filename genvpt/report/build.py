"""Build report/index.html (self-contained: images embedded) and report/report.md (images in report/plots/)."""
from __future__ import annotations

import base64
import html
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from ..io import atomic_dir, read_json
from ..metrics.params import ReportParams, SampleConfig, SampleParams
from ..metrics.registry import metric_info
from .figures import image_grid, plot_curves, plot_fd_vs_params, save_grid
from .tables import best_per_column, format_value, html_table, markdown_table, table_columns

log = logging.getLogger(__name__)

__all__ = ["build_report", "load_table_rows", "discover_curves"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
table.metrics{border-collapse:collapse;font-size:.9em;margin:1em 0}
table.metrics th,table.metrics td{border:1px solid #ddd;padding:.35em .6em;text-align:right}
table.metrics thead th{background:#f4f6f8;cursor:help}table.metrics tbody th{text-align:left}
td.best{font-weight:700;background:#e6f4ea}
.grids{display:flex;flex-wrap:wrap;gap:1.4em}.grids figure{margin:0}.grids figcaption{font-size:.85em;color:#555}
img{image-rendering:pixelated;max-width:100%}dl dt{font-weight:600;margin-top:.5em}dl dd{margin-left:1.2em;color:#444}
"""


def _json_safe(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def load_table_rows(scores_dir: str | os.PathLike, order: Optional[Sequence[str]] = None) -> list[dict]:
    """Rows of ``metrics.parquet`` as JSON-safe dicts (NaN -> None), in ``order`` of config names when given."""
    import pandas as pd

    path = Path(scores_dir) / "metrics.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the score stage first")
    df = pd.read_parquet(path)
    rows = [{k: _json_safe(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
    if order is not None:
        pos = {n: i for i, n in enumerate(order)}
        rows.sort(key=lambda r: pos.get(r["config"], len(pos)))
    return rows


def discover_curves(cfg: SampleConfig) -> list[Path]:
    """The configuration's training-curve CSVs: ``curves`` from params, else the CSVs next to its training record
    or generator file (where the training stages write them)."""
    if cfg.curves:
        return [Path(c) for c in cfg.curves]
    dirs = []
    for p in (cfg.train_record, cfg.generator):
        if p:
            d = Path(p).parent
            if d not in dirs:
                dirs.append(d)
    return [c for d in dirs if d.is_dir() for c in sorted(d.glob("*.csv"))]


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def build_report(
    scores_dir: str | os.PathLike,
    samples_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sample_params: SampleParams,
    report_params: ReportParams = ReportParams(),
    target_dir: Optional[str | os.PathLike] = None,
    memory_benchmark: Optional[str | os.PathLike] = None,
) -> Path:
    """Write ``out_dir`` (atomically): index.html, report.md, plots/*.png. Returns the index.html path.

    ``memory_benchmark``: ``benchmarks/mvp_memory.py``'s result file; when it exists, its MVP / prefilled peak-memory
    ratio at VAR-d16 size is reported beside the ratio of this pipeline's own training records."""
    from ..sampling import SampleSet
    from ..metrics.scoring import fd_key

    rp = report_params
    configs = {c.name: c for c in sample_params.configs}
    rows = load_table_rows(scores_dir, order=list(configs))
    defs_path = Path(scores_dir) / "definitions.json"
    defs = read_json(defs_path) if defs_path.is_file() else {}
    columns = table_columns(rows)
    fk = fd_key(rows[0]) if rows else None
    memory = memory_lines(rows, memory_benchmark)
    with atomic_dir(out_dir) as tmp:
        plots = tmp / "plots"
        plots.mkdir()
        figs: dict[str, list[tuple[str, Path]]] = {"grids": [], "curves": [], "fd": []}
        # sample grids: the real target images first, for reference
        if target_dir is not None:
            try:
                from ..datasets.shards import load_split

                real = load_split(target_dir, defs.get("real_split", "val"))
                g = image_grid(real.images, real.labels, per_class=rp.grid_images_per_class,
                               max_classes=rp.grid_max_classes, scale=rp.grid_scale)
                figs["grids"].append(("real target images", save_grid(plots / "grid-real.png", g)))
            except Exception as err:  # the report still renders without the reference grid
                log.warning("no real-image grid: %s", err)
        for r in rows:
            name = r["config"]
            sdir = Path(samples_dir) / name
            if not (sdir / "record.json").is_file():
                log.warning("no sample set for %s in %s: no grid", name, samples_dir)
                continue
            s = SampleSet(sdir)
            g = image_grid(s.load_images(), s.labels, per_class=rp.grid_images_per_class,
                           max_classes=rp.grid_max_classes, scale=rp.grid_scale)
            figs["grids"].append((name, save_grid(plots / f"grid-{name}.png", g)))
        for name, cfg in configs.items():
            if name not in {r["config"] for r in rows}:
                continue
            p = plot_curves(plots / f"curves-{name}.png", discover_curves(cfg), f"{name}: training curves")
            if p is not None:
                figs["curves"].append((name, p))
        if fk is not None:
            p = plot_fd_vs_params(plots / "fd_vs_params.png", rows, fk)
            if p is not None:
                figs["fd"].append((f"{metric_info(fk).label} vs trainable parameters", p))
        md = _markdown(rows, columns, defs, figs, rp, sample_params, fk, memory)
        (tmp / "report.md").write_text(md, encoding="utf-8")
        (tmp / "index.html").write_text(_html(rows, columns, defs, figs, rp, sample_params, fk, memory), encoding="utf-8")
    log.info("report with %d configurations written to %s", len(rows), out_dir)
    return Path(out_dir) / "index.html"


def memory_lines(rows: list[dict], benchmark: Optional[str | os.PathLike] = None) -> list[str]:
    """MVP's peak training memory against the prefilled prompt's (MVP adds its prompts to the token maps, the
    prefilled prompt makes the sequence longer): from the rows' training records, and from the VAR-d16 benchmark
    file when there is one."""
    out = []
    by = {r["config"]: r for r in rows}
    mvp, pre = by.get("mvp", {}), by.get("prefilled", {})
    a, b = mvp.get("train_peak_memory_mb"), pre.get("train_peak_memory_mb")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        out.append(f"this pipeline (its own VAR and batch): MVP {a:.0f} MiB vs prefilled {b:.0f} MiB peak training "
                   f"memory, ratio {a / b:.2f}")
    if benchmark is not None and Path(benchmark).is_file():
        try:
            d = read_json(benchmark)
            runs = d.get("runs", {})
            out.append(f"VAR-d{d['depth']} with random weights, batch {d['batch_size']} on {d['device']} "
                       f"({Path(benchmark).as_posix()}): MVP {runs['mvp']['peak_mb']:.0f} MiB vs prefilled "
                       f"{runs['prefilled']['peak_mb']:.0f} MiB, ratio {d['ratio_peak']:.2f}"
                       + (f" ({d['ratio_above_start']:.2f} counting only what the training steps add)"
                          if isinstance(d.get("ratio_above_start"), (int, float)) else "")
                       + f"; the paper: {d.get('paper_ratio', 0.625):.3f} (14.5 vs 23.2 GB at d16 on a GPU)")
        except (KeyError, TypeError, ValueError) as err:
            log.warning("memory benchmark %s not understood: %s", benchmark, err)
    return out


def _headline(rows: list[dict], fk: Optional[str]) -> list[str]:
    lines = []
    best = best_per_column(rows, [k for k in (fk, "clip_score", "class_acc") if k])
    for k, idx in best.items():
        names = ", ".join(rows[i]["config"] for i in sorted(idx))
        lines.append(f"best {metric_info(k).label}: {names} ({format_value(k, rows[min(idx)][k])})")
    return lines


def _space_note(defs: dict) -> str:
    return defs.get("feature_space_note", "")


def _settings(sp: SampleParams, defs: dict) -> str:
    return (f"{sp.images_per_class} samples per class (seed {sp.seed}) against {defs.get('n_reals', '?')} real "
            f"target images ({defs.get('real_split', 'val')} split); CLIP score = {defs.get('clip_score', '?')}, "
            f"conditioning text \"{defs.get('text_template', '?')}\" with the class name.")


def _markdown(rows, columns, defs, figs, rp: ReportParams, sp: SampleParams, fk, memory=()) -> str:
    out = [f"# {rp.title}", ""]
    if _space_note(defs):
        out += [f"> **Feature space.** {_space_note(defs)}.", ""]
    out += [_settings(sp, defs), ""]
    for line in _headline(rows, fk):
        out.append(f"- {line}")
    out += ["", "## Metrics", "", "Best value per column in **bold** (↑ higher is better, ↓ lower is better).", "",
            markdown_table(rows, columns)]
    if memory:
        out += ["## Peak training memory: MVP against the prefilled prompt", ""] + [f"- {m}" for m in memory] + [""]
    if figs["fd"]:
        out += ["## FD against trainable parameters", ""] + [f"![{t}](plots/{p.name})" for t, p in figs["fd"]] + [""]
    if figs["grids"]:
        out += ["## Samples", "", "One row per class."]
        for t, p in figs["grids"]:
            out += ["", f"### {t}", "", f"![{t}](plots/{p.name})"]
        out.append("")
    if figs["curves"]:
        out += ["## Training curves", ""]
        for t, p in figs["curves"]:
            out += [f"![{t}](plots/{p.name})", ""]
    out += ["## Definitions", ""]
    for k in columns + [k for k in ("probe_real_acc", "n_samples") if any(k in r for r in rows)]:
        out.append(f"- **{metric_info(k).label}** (`{k}`): {metric_info(k).definition}")
    probe = [r for r in rows if isinstance(r.get("probe_real_acc"), (int, float))]
    if probe:
        out += ["", f"Linear-probe accuracy on the real images (the ceiling for class acc): "
                    f"{format_value('probe_real_acc', probe[0]['probe_real_acc'])}."]
    return "\n".join(out) + "\n"


def _html(rows, columns, defs, figs, rp: ReportParams, sp: SampleParams, fk, memory=()) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(rp.title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(rp.title)}</h1>"]
    if _space_note(defs):
        parts.append(f"<div class='note'><b>Feature space.</b> {e(_space_note(defs))}.</div>")
    parts.append(f"<p>{e(_settings(sp, defs))}</p>")
    heads = _headline(rows, fk)
    if heads:
        parts.append("<ul>" + "".join(f"<li>{e(h)}</li>" for h in heads) + "</ul>")
    parts += ["<h2>Metrics</h2>", "<p>Best value per column highlighted (↑ higher is better, ↓ lower is better). "
              "Hover a header for its definition.</p>", html_table(rows, columns)]
    probe = [r for r in rows if isinstance(r.get("probe_real_acc"), (int, float))]
    if probe:
        parts.append(f"<p>Linear-probe accuracy on the real images (the ceiling for class acc): "
                     f"{e(format_value('probe_real_acc', probe[0]['probe_real_acc']))}.</p>")
    if memory:
        parts.append("<h2>Peak training memory: MVP against the prefilled prompt</h2><ul>"
                     + "".join(f"<li>{e(m)}</li>" for m in memory) + "</ul>")
    if figs["fd"]:
        parts.append("<h2>FD against trainable parameters</h2>")
        parts += [_img_tag(p, t) for t, p in figs["fd"]]
    if figs["grids"]:
        parts.append("<h2>Samples</h2><p>One row per class.</p><div class='grids'>")
        parts += [f"<figure>{_img_tag(p, t)}<figcaption>{e(t)}</figcaption></figure>" for t, p in figs["grids"]]
        parts.append("</div>")
    if figs["curves"]:
        parts.append("<h2>Training curves</h2>")
        parts += [f"<figure>{_img_tag(p, t)}</figure>" for t, p in figs["curves"]]
    parts.append("<h2>Definitions</h2><dl>")
    for k in columns + [k for k in ("probe_real_acc", "n_samples") if any(k in r for r in rows)]:
        parts.append(f"<dt>{e(metric_info(k).label)} <code>{e(k)}</code></dt><dd>{e(metric_info(k).definition)}</dd>")
    parts.append("</dl></body></html>")
    return "\n".join(parts) + "\n"
