"""sample -> score -> report on small random stand-ins (a tiny template 'generator', a tiny random CLIP and a small
prepared target dataset written in the test), and the Prefect artifact of the table. The score and report stages read
the seeded layout (<samples>/<row>/seed-<s>/), written here by the tiny sampler; tests/test_score_seeds.py checks the
aggregation over seeds in detail."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import genvpt.sampling as sampling
from _metrics_stubs import TinySampler, tiny_clip, write_sample_set
from genvpt.config import load_params
from genvpt.datasets.shards import write_split
from genvpt.sampling import SampleSet

CLASSES = ["circle", "square", "star"]
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the stage entry points (stages/*.py) live at the repository root
    sys.path.insert(0, str(ROOT))


def _prepared_target(root: Path, per_class: dict[str, int], size: int = 16) -> Path:
    g = torch.Generator().manual_seed(5)
    for split, n in per_class.items():
        samples = []
        for c, name in enumerate(CLASSES):
            for i in range(n):
                arr = (torch.rand(size, size, 3, generator=g) * 80 + c * 80).to(torch.uint8).numpy()
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG")
                samples.append({"key": f"{split}-{name}-{i:03d}", "png": buf.getvalue(), "label": c,
                                "class_name": name, "caption": f"a {name}", "source_id": f"{split}{c}{i}",
                                "width": size, "height": size})
        write_split(samples, root / split, maxcount=1000)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    target = _prepared_target(root / "prepared", {"train": 6, "val": 4, "test": 5})
    params = {
        "sample": {"images_per_class": 4, "batch_size": 5, "seed": 3, "isolate": False, "sampling_seeds": [3, 4]},
        "metrics": {"kid_subsets": 5, "batch_size": 8},
        "report": {"grid_images_per_class": 3},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, target


@pytest.fixture(scope="module")
def sampled(workspace):
    """The sample stage on a frozen row (the tiny sampler stands in for the backbone): one set per sampling seed."""
    root, target = workspace
    from stages import sample as sample_stage

    orig = sampling.SAMPLERS["backbone"]
    sampling.SAMPLERS["backbone"] = lambda cfg, device, params: TinySampler()
    try:
        records = sample_stage.main(["--target", str(target), "--out", str(root / "samples" / "ar"),
                                     "--backbone", "ar", "--generator", "g.pt", "--tokenizer", "t.pt",
                                     "--params", str(root / "params.yaml")])
    finally:
        sampling.SAMPLERS["backbone"] = orig
    return records


# the report rows of the score / report tests: a frozen family sampled at two sampling seeds, two adapted rows at two
# training seeds each (mvp: costs from its training record, next to its curve; lora: trainable_params in the record)
SCORE_ROWS = ["ar", "mvp", "lora"]


@pytest.fixture(scope="module")
def seeded(workspace):
    """Sample sets in the seeded layout, drawn from the tiny sampler (noise sets the row's quality)."""
    root, _ = workspace
    out = root / "seeded"
    sampler = TinySampler()
    labels = torch.arange(len(CLASSES)).repeat_interleave(4)
    for s in range(2):
        rec = root / "adapted" / "mvp" / f"seed-{s}" / "record.json"
        rec.parent.mkdir(parents=True, exist_ok=True)
        rec.write_text(json.dumps({"trainable_params": 1234, "train_time_s": 12.5}))
        pd.DataFrame({"step": [0, 10, 20], "loss": [3.0, 2.0, 1.5], "lr": [1e-3, 1e-3, 5e-4]}).to_csv(
            rec.parent / "curve.csv", index=False)
        for row, kind, noise, extra in (
            ("ar", "frozen", 0.9, {"backbone": "ar"}),
            ("mvp", "adapted", 0.3, {"method": "mvp", "train_record": rec}),
            ("lora", "adapted", 0.05, {"method": "lora", "trainable_params": 99}),
        ):
            imgs = sampler.sample_images(labels, seed=10 * s + len(row), batch_size=len(labels), noise=noise)
            write_sample_set(out / row / f"seed-{s}", imgs, labels, CLASSES, row=row, kind=kind, seed=s, **extra)
    return out


@pytest.fixture(scope="module")
def scored(workspace, seeded):
    root, target = workspace
    from stages import score as score_stage

    orig = score_stage.load_scoring_clip, score_stage.report_rows
    score_stage.load_scoring_clip = lambda params, path: tiny_clip()
    score_stage.report_rows = lambda params: list(SCORE_ROWS)
    try:
        rows = score_stage.main(["--samples", str(seeded), "--target", str(target),
                                 "--out", str(root / "scores"), "--params", str(root / "params.yaml")])
    finally:
        score_stage.load_scoring_clip, score_stage.report_rows = orig
    return rows


def test_sample_stage_writes_seeded_sets_torch_fidelity_can_read(workspace, sampled):
    from genvpt.metrics.scoring import discover_sample_sets

    root, _ = workspace
    assert [(r["row"], r["seed"], r["kind"], r["spread_over"]) for r in sampled] == [
        ("ar", 3, "frozen", "sampling_seed"), ("ar", 4, "frozen", "sampling_seed")]
    s = SampleSet(root / "samples" / "ar" / "seed-3")
    assert s.record["n"] == 12 and s.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert s.record["sample_time_per_image_s"] > 0 and s.record["peak_memory_mb"] > 0
    imgs = s.load_images()
    assert imgs.shape == (12, 3, 16, 16) and imgs.dtype == torch.uint8
    # one file per set: images.tar holds the PNGs in index order, byte-identical when written again
    assert sorted(p.name for p in s.dir.iterdir()) == ["images.tar", "record.json"]
    import tarfile

    with tarfile.open(s.shard) as tar:
        assert tar.getnames() == [f"{i:06d}.png" for i in range(12)]
    # extracted (SampleSet.extract, or tar -xf), torch-fidelity's own directory reader finds the same images
    from torch_fidelity.utils import prepare_input_from_id

    ds = prepare_input_from_id(1, input1=str(s.extract(root / "extracted")), verbose=False)
    assert len(ds) == 12 and torch.equal(ds[5], imgs[5])
    # seeded: the same sampling seed gives identical images, another seed other images
    params = load_params(root / "params.yaml")
    cfg = sampling.SampleConfig(name="ar", family="ar", generator="g.pt", tokenizer="t.pt")
    again = sampling.sample_config(cfg, CLASSES, params.sample, root / "again", sampler=TinySampler(),
                                   show_progress=False, seed=3)
    assert again["labels"] == s.record["labels"]
    assert torch.equal(SampleSet(root / "again").load_images(), imgs)
    assert (root / "again" / "images.tar").read_bytes() == s.shard.read_bytes()
    assert not torch.equal(SampleSet(root / "samples" / "ar" / "seed-4").load_images(), imgs)
    assert not [p for p in (root / "samples").rglob(".*")]
    # the score stage reads what the sample stage wrote
    assert [(r.row, r.seed) for r in discover_sample_sets(root / "samples", ["ar"])] == [("ar", 3), ("ar", 4)]


def test_sample_stage_rejects_bad_sampler_output(tmp_path):
    class Bad:
        def sample_images(self, labels, *, seed, batch_size):
            return torch.zeros(len(labels), 3, 8, 8)  # float, not uint8

    params = load_params.__globals__["validate_params"]({"sample": {"images_per_class": 1, "isolate": False}}).sample
    cfg = sampling.SampleConfig(name="x", family="var", generator="g.pt", tokenizer="t.pt")
    with pytest.raises(ValueError, match="uint8"):
        sampling.sample_config(cfg, CLASSES, params, tmp_path / "x", sampler=Bad(), show_progress=False)
    assert not (tmp_path / "x").exists()


def test_score_stage_outputs(workspace, scored):
    root, _ = workspace
    assert [(r["row"], r["seed"]) for r in scored] == [("ar", 0), ("ar", 1), ("mvp", 0), ("mvp", 1), ("lora", 0),
                                                       ("lora", 1)]
    for name in SCORE_ROWS:
        m = json.loads((root / "scores" / "metrics" / name / "metrics.json").read_text())
        assert {"fd_clip", "kd_clip_mean", "is_clip_mean", "precision_clip", "recall_clip", "clip_score",
                "diversity_clip", "class_acc", "sample_time_per_image_s", "trainable_params"} <= set(m)
        assert {"fd_clip_std", "clip_score_std", "class_acc_std"} <= set(m) and m["n_seeds"] == 2
        assert "fid" not in m and all(isinstance(v, (int, float)) or v is None for v in m.values())
    df = pd.read_parquet(root / "scores" / "metrics.parquet")  # one row per sample set
    assert list(df["row"]) == ["ar", "ar", "mvp", "mvp", "lora", "lora"] and list(df["seed"]) == [0, 1] * 3
    assert list(df["spread_over"]) == ["sampling_seed"] * 2 + ["training_seed"] * 4
    assert ((df["diversity_clip"] >= 0) & (df["diversity_clip"] <= 2)).all()  # cosine distances
    assert (df["n_samples"] == 12).all() and (df["n_reals"] == 15).all()  # against the test split
    summ = pd.read_parquet(root / "scores" / "summary.parquet")  # one row per report row
    assert list(summ["row"]) == SCORE_ROWS and list(summ["n_seeds"]) == [2, 2, 2]
    assert list(summ["trainable_params"]) == [0, 1234, 99]  # frozen default, training record, sample record
    assert summ.loc[1, "train_time_s"] == 12.5 and summ.loc[1, "train_time_s_std"] == 0
    defs = json.loads((root / "scores" / "definitions.json").read_text())
    assert defs["feature_space"] == "clip" and "not comparable" in defs["feature_space_note"]
    assert defs["counts"]["real_images"] == 15 and defs["counts"]["rows"]["mvp"]["n_seeds"] == 2
    assert (root / "scores" / "fd_vs_params.csv").read_text().splitlines()[0] == \
        "row,kind,n_seeds,images_per_set,n_reals,real_split,trainable_params,fd_clip_std,fd_clip"


def test_report_renders_several_rows(workspace, seeded, scored, monkeypatch):
    root, target = workspace
    from stages import report as report_stage

    monkeypatch.setattr(report_stage, "report_rows", lambda params: list(SCORE_ROWS))
    index = report_stage.main(["--scores", str(root / "scores"), "--samples", str(seeded),
                               "--target", str(target), "--out", str(root / "report"), "--compare", "lora:mvp",
                               "--params", str(root / "params.yaml")])
    html = Path(index).read_text()
    md = (root / "report" / "report.md").read_text()
    for name in SCORE_ROWS:
        assert f"<th>{name}</th>" in html and f"| {name} |" in md
        assert (root / "report" / "plots" / f"grid-{name}.png").is_file()
    thead = html[html.index("<thead>"):html.index("</thead>")]
    assert ">FD-CLIP ↓<" in thead and ">FID" not in thead and ">KD-CLIP ↓<" in thead  # never labelled as FID
    assert "| FD-CLIP ↓ |" in md and "| FID" not in md
    assert " ± " in md and "(n=2)" in md and "2 sampling seeds" in md and "2 training seeds" in md
    assert "- lora vs mvp, FD-CLIP ↓:" in md and "**Sampling noise**" in md
    assert html.count("data:image/png;base64,") >= 5  # 3 grids + real grid + FD plot, embedded
    assert (root / "report" / "plots" / "curves-mvp.png").is_file()  # mvp's training record has a curve CSV
    assert not (root / "report" / "plots" / "curves-ar.png").exists()
    for ref in __import__("re").findall(r"\]\((plots/[^)]+)\)", md):
        assert (root / "report" / ref).is_file(), ref
    # FD-CLIP is bold exactly for a row whose mean + std lies below every other row's mean - std
    summ = pd.read_parquet(root / "scores" / "summary.parquet").set_index("row")
    lo, hi = summ["fd_clip"] - summ["fd_clip_std"], summ["fd_clip"] + summ["fd_clip_std"]
    header = [c.strip() for c in next(line for line in md.splitlines() if line.startswith("| row |")).split("|")]
    col = header.index("FD-CLIP ↓")
    for name in SCORE_ROWS:
        expected = all(hi[name] < lo[other] for other in SCORE_ROWS if other != name)
        cells = next(line for line in md.splitlines() if line.startswith(f"| {name} |")).split("|")
        assert cells[col].strip().startswith("**") == expected, name


def test_best_per_column_directions():
    from genvpt.report.tables import best_per_column

    def row(name, **vals):
        r = {"row": name, "n_seeds": 3}
        for k, (m, sd) in vals.items():
            r[k], r[f"{k}_std"] = m, sd
        return r

    rows = [row("x", fd_clip=(1.0, 0.05), clip_score=(20.0, 0.5), class_acc=(0.5, 0.1), trainable_params=(5, 0)),
            row("y", fd_clip=(0.5, 0.05), clip_score=(20.0, 0.5), class_acc=(0.5, 0.1), trainable_params=(0, 0)),
            row("z", fd_clip=(0.7, 0.05), clip_score=(10.0, 0.5), class_acc=(0.5, 0.1), trainable_params=(9, 0))]
    best = best_per_column(rows, ["fd_clip", "clip_score", "class_acc", "trainable_params"])
    # lower FD wins beyond the spread; tied means (clip score x = y, class acc) are no win; counts are not ranked
    assert best == {"fd_clip": {1}}
    rows[0]["clip_score"] = 21.2  # higher is better: 21.2 - 0.5 > 20.0 + 0.5 (y) and > 10.0 + 0.5 (z)
    assert best_per_column(rows, ["clip_score"]) == {"clip_score": {0}}
    rows[0]["clip_score"] = 20.9  # 20.4 < 20.5: within y's spread
    assert best_per_column(rows, ["clip_score"]) == {}


def test_publish_report_artifact(prefect_harness, workspace, scored):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from genvpt.report import load_table_rows, publish_report_artifact

    from prefect import flow

    root, _ = workspace
    rows = load_table_rows(root / "scores")

    @flow
    def publish(rows):  # as the pipeline flow calls it: inside a flow run
        return publish_report_artifact(rows)

    ids = publish(rows)
    assert len(ids) == 2 and all(ids)

    async def read(key):
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    import asyncio

    # the session's Prefect server may hold other tests' artifacts under the same keys: read this flow run's own
    table = [a for a in asyncio.run(read("genvpt-metrics")) if a.id in ids]
    md = [a for a in asyncio.run(read("genvpt-report")) if a.id in ids]
    assert table and table[0].type == "table"
    data = table[0].data if isinstance(table[0].data, list) else json.loads(table[0].data)
    assert [r["row"] for r in data] == SCORE_ROWS and all("fd_clip_std" in r for r in data)
    assert md and "FD-CLIP" in md[0].data and "| ar |" in md[0].data and " ± " in md[0].data


def test_sampling_a_real_backbone_file(tmp_path):
    """The built-in `backbone` kind: a tiny random VAR + multi-scale VQ-VAE saved as model files, loaded with
    genvpt.generators.load_backbone, sampled in batches with per-batch seeds."""
    from genvpt.config import validate_params
    from genvpt.generators import VAR, VARConfig, save_generator
    from genvpt.tokenizers import MSVQConfig, MultiScaleVQVAE, save_tokenizer

    torch.manual_seed(0)
    tok = MultiScaleVQVAE(MSVQConfig(vocab_size=32, z_channels=4, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                                     patch_nums=(1, 2, 4), using_sa=False, using_mid_sa=False, norm_groups=4))
    var = VAR(VARConfig(vocab_size=32, Cvae=4, num_classes=3, depth=1, embed_dim=16, num_heads=2, patch_nums=(1, 2, 4),
                        drop_path_rate=0.0))
    save_tokenizer(tmp_path / "tok.pt", tok)
    save_generator(tmp_path / "var.pt", var)
    params = validate_params({"sample": {"images_per_class": 3, "batch_size": 4, "isolate": False, "configs": [
        {"name": "v", "family": "var", "generator": str(tmp_path / "var.pt"), "tokenizer": str(tmp_path / "tok.pt"),
         "sampling": {"top_k": 5}}]}})
    [rec] = sampling.run_sampling(params.sample, CLASSES, tmp_path / "samples", full_params=params)
    s = SampleSet(tmp_path / "samples" / "v")
    assert rec["n"] == 9 and s.load_images().shape == (9, 3, 8, 8)
    assert rec["model_params"] == sum(p.numel() for p in [*var.parameters(), *tok.parameters()])
    again = sampling.run_sampling(params.sample, CLASSES, tmp_path / "again", full_params=params)
    assert torch.equal(SampleSet(tmp_path / "again" / "v").load_images(), s.load_images())  # seeded
    with pytest.raises(ValueError, match="knows 3 classes"):
        sampling.run_sampling(params.sample, CLASSES + ["heart"], tmp_path / "x", full_params=params)
    bad = validate_params({"sample": {"isolate": False, "configs": [
        {"name": "v", "family": "var", "generator": str(tmp_path / "nope.pt"), "tokenizer": "t.pt"}]}})
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        sampling.run_sampling(bad.sample, CLASSES, tmp_path / "y", full_params=bad)


def test_adapted_kind_is_provided_by_the_adaptation_area(monkeypatch):
    from genvpt.config import validate_params

    monkeypatch.delitem(sampling.SAMPLERS, "adapted", raising=False)
    loader = sampling._loader("adapted")  # imported and registered on first use
    from genvpt.adaptation import sampler as adapted_sampler

    assert loader is adapted_sampler._load_for_sampling
    seen = []
    assert sampling._call_loader(lambda cfg, device: seen.append(2) or 2, None, None, None) == 2
    assert sampling._call_loader(lambda cfg, device, params: seen.append(3) or 3, None, None, "p") == 3
    with pytest.raises(ValueError, match="unknown sampler kind"):
        sampling._loader("nope")
    with pytest.raises(Exception, match="needs generator"):
        validate_params({"sample": {"configs": [{"name": "p", "kind": "adapted"}]}})


def test_adapted_rows_read_their_training_record(tmp_path):
    from genvpt.metrics.scoring import cost_metrics

    (tmp_path / "record.json").write_text(json.dumps({"trainable_params": 4660, "train_time_s": 31.5,
                                                      "peak_memory_mb": 900.0}))
    rec = {"kind": "adapted", "train_record": str(tmp_path / "record.json"), "trainable_params": None,
           "sample_time_per_image_s": 0.01, "peak_memory_mb": 500.0, "model_params": 10}
    m = cost_metrics(rec)
    assert m == {"trainable_params": 4660, "train_time_s": 31.5, "train_peak_memory_mb": 900.0,
                 "sample_time_per_image_s": 0.01, "sample_peak_memory_mb": 500.0, "model_params": 10}
    assert cost_metrics({**rec, "trainable_params": 77})["trainable_params"] == 77  # the sample record wins


def test_memory_lines_compare_mvp_with_prefilled(tmp_path):
    from genvpt.report.build import memory_lines

    rows = [{"row": "var", "trainable_params": 0},
            {"row": "mvp", "train_peak_memory_mb": 900.0},
            {"row": "prefilled", "train_peak_memory_mb": 1200.0}]
    assert memory_lines(rows) == ["this pipeline (its own VAR and batch): MVP 900 MiB vs prefilled 1200 MiB peak "
                                  "training memory, ratio 0.75"]
    bench = tmp_path / "mvp_memory.json"
    bench.write_text(json.dumps({"depth": 16, "batch_size": 2, "device": "cpu", "ratio_peak": 0.9,
                                 "ratio_above_start": 0.81, "paper_ratio": 0.625,
                                 "runs": {"mvp": {"peak_mb": 4032.0}, "prefilled": {"peak_mb": 4480.0}}}))
    lines = memory_lines(rows, bench)
    assert len(lines) == 2 and "VAR-d16" in lines[1] and "ratio 0.90 (0.81 counting only" in lines[1]
    assert "0.625" in lines[1]
    assert memory_lines([{"row": "mvp", "train_peak_memory_mb": 1.0}], tmp_path / "absent.json") == []


def test_trainable_pct_from_the_training_record(tmp_path):
    from genvpt.metrics.scoring import cost_metrics

    rec = tmp_path / "p" / "record.json"
    rec.parent.mkdir()
    rec.write_text(json.dumps({"trainable_params": 8192, "trainable_pct": 0.65, "peak_memory_mb": 1400.0}))
    sample_record = {"sample_time_per_image_s": 0.01, "peak_memory_mb": 900.0}
    adapted = cost_metrics({**sample_record, "kind": "adapted", "train_record": str(rec)})
    assert adapted["trainable_pct"] == 0.65 and adapted["train_peak_memory_mb"] == 1400.0
    frozen = cost_metrics({**sample_record, "kind": "frozen", "train_record": None, "trainable_params": None})
    assert frozen["trainable_params"] == 0 and frozen["trainable_pct"] == 0.0
