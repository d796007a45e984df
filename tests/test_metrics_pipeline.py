"""sample -> score -> report on small random stand-ins (a tiny template 'generator', a tiny random CLIP and a small
prepared target dataset written in the test), and the Prefect artifact of the table."""
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
from _metrics_stubs import TinySampler, tiny_clip
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
    target = _prepared_target(root / "prepared", {"train": 6, "val": 5})
    (root / "gen" / "b").mkdir(parents=True)
    pd.DataFrame({"step": [0, 10, 20], "loss": [3.0, 2.0, 1.5], "lr": [1e-3, 1e-3, 5e-4]}).to_csv(
        root / "gen" / "b" / "train_curve.csv", index=False)
    (root / "gen" / "b" / "train.json").write_text(json.dumps({"trainable_params": 1234, "train_time_s": 12.5}))
    params = {
        "sample": {
            "images_per_class": 4, "batch_size": 5, "seed": 3, "isolate": False,
            "configs": [
                {"name": "a", "family": "ar", "generator": str(root / "gen/a/model.pt"), "tokenizer": "t.pt",
                 "sampling": {"noise": 0.9}},
                {"name": "b", "family": "var", "generator": str(root / "gen/b/model.pt"), "tokenizer": "t.pt",
                 "train_record": str(root / "gen/b/train.json")},
                {"name": "c", "family": "maskgit", "generator": str(root / "gen/c/model.pt"), "tokenizer": "t.pt",
                 "sampling": {"noise": 0.05}, "trainable_params": 99},
            ],
        },
        "metrics": {"kid_subsets": 5, "batch_size": 8},
        "report": {"grid_images_per_class": 3},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, target


@pytest.fixture(scope="module")
def sampled(workspace):
    root, target = workspace
    from stages import sample as sample_stage

    orig = sampling.SAMPLERS["backbone"]
    sampling.SAMPLERS["backbone"] = lambda cfg, device, params: TinySampler()
    try:
        records = sample_stage.main(["--target", str(target), "--out", str(root / "samples"),
                                     "--params", str(root / "params.yaml")])
    finally:
        sampling.SAMPLERS["backbone"] = orig
    return records


@pytest.fixture(scope="module")
def scored(workspace, sampled):
    root, target = workspace
    from stages import score as score_stage

    orig = score_stage.load_scoring_clip
    score_stage.load_scoring_clip = lambda params, path: tiny_clip()
    try:
        rows = score_stage.main(["--samples", str(root / "samples"), "--target", str(target),
                                 "--out", str(root / "scores"), "--params", str(root / "params.yaml")])
    finally:
        score_stage.load_scoring_clip = orig
    return rows


def test_sample_stage_writes_seeded_sets_torch_fidelity_can_read(workspace, sampled):
    root, _ = workspace
    assert [r["name"] for r in sampled] == ["a", "b", "c"]
    s = SampleSet(root / "samples" / "a")
    assert s.record["n"] == 12 and s.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert s.record["sample_time_per_image_s"] > 0 and s.record["peak_memory_mb"] > 0
    imgs = s.load_images()
    assert imgs.shape == (12, 3, 16, 16) and imgs.dtype == torch.uint8
    # torch-fidelity's own directory reader finds the same images
    from torch_fidelity.utils import prepare_input_from_id

    ds = prepare_input_from_id(1, input1=str(s.image_dir), verbose=False)
    assert len(ds) == 12 and torch.equal(ds[5], imgs[5])
    # seeded: the same params give identical images; no temporary directories left behind
    params = load_params(root / "params.yaml")
    again = sampling.sample_config(params.sample.configs[0], CLASSES, params.sample, root / "again",
                                   sampler=TinySampler(), show_progress=False)
    assert again["labels"] == s.record["labels"]
    assert torch.equal(SampleSet(root / "again").load_images(), imgs)
    assert not [p for p in (root / "samples").iterdir() if p.name.startswith(".")]


def test_sample_stage_rejects_bad_sampler_output(tmp_path):
    class Bad:
        def sample_images(self, labels, *, seed, batch_size):
            return torch.zeros(len(labels), 3, 8, 8)  # float, not uint8

    params = load_params.__globals__["validate_params"]({"sample": {"images_per_class": 1, "isolate": False}}).sample
    with pytest.raises(ValueError, match="uint8"):
        sampling.sample_config(params.configs[0], CLASSES, params, tmp_path / "x", sampler=Bad(), show_progress=False)
    assert not (tmp_path / "x").exists()


def test_score_stage_outputs(workspace, scored):
    root, _ = workspace
    assert [r["config"] for r in scored] == ["a", "b", "c"]
    for name in "abc":
        m = json.loads((root / "scores" / "metrics" / name / "metrics.json").read_text())
        assert {"fd_clip", "kd_clip_mean", "is_clip_mean", "precision_clip", "recall_clip", "clip_score",
                "diversity_clip", "class_acc", "sample_time_per_image_s", "trainable_params"} <= set(m)
        assert "fid" not in m and all(isinstance(v, (int, float)) or v is None for v in m.values())
    df = pd.read_parquet(root / "scores" / "metrics.parquet")
    assert list(df["config"]) == ["a", "b", "c"]
    assert list(df["trainable_params"]) == [0, 1234, 99]  # frozen default, training record, params override
    assert df.loc[1, "train_time_s"] == 12.5
    assert ((df["diversity_clip"] >= 0) & (df["diversity_clip"] <= 2)).all()  # cosine distances
    assert (df["n_samples"] == 12).all() and (df["n_reals"] == 15).all()  # against the val split
    defs = json.loads((root / "scores" / "definitions.json").read_text())
    assert defs["feature_space"] == "clip" and "not comparable" in defs["feature_space_note"]
    assert (root / "scores" / "fd_vs_params.csv").read_text().splitlines()[0] == "config,trainable_params,fd_clip"


def test_report_renders_several_configurations(workspace, scored):
    root, target = workspace
    from stages import report as report_stage

    index = report_stage.main(["--scores", str(root / "scores"), "--samples", str(root / "samples"),
                               "--target", str(target), "--out", str(root / "report"),
                               "--params", str(root / "params.yaml")])
    html = Path(index).read_text()
    md = (root / "report" / "report.md").read_text()
    for name in "abc":
        assert f"<th>{name}</th>" in html and f"| {name} |" in md
        assert (root / "report" / "plots" / f"grid-{name}.png").is_file()
    thead = html[html.index("<thead>"):html.index("</thead>")]
    assert ">FD-CLIP ↓<" in thead and ">FID" not in thead and ">KD-CLIP ↓<" in thead  # never labelled as FID
    assert "| FD-CLIP ↓ |" in md and "| FID" not in md
    assert html.count('class="best"') >= 5 and "**" in md
    assert html.count("data:image/png;base64,") >= 5  # 3 grids + real grid + FD plot, embedded
    assert (root / "report" / "plots" / "curves-b.png").is_file()  # b has a training-curve CSV
    assert not (root / "report" / "plots" / "curves-a.png").exists()
    for ref in __import__("re").findall(r"\]\((plots/[^)]+)\)", md):
        assert (root / "report" / ref).is_file(), ref
    # best FD-CLIP is bold in the markdown row of the configuration with the lowest value
    df = pd.read_parquet(root / "scores" / "metrics.parquet")
    best = df.loc[df["fd_clip"].idxmin(), "config"]
    row = next(line for line in md.splitlines() if line.startswith(f"| {best} |"))
    assert row.split("|")[2].strip().startswith("**")


def test_best_per_column_directions():
    from genvpt.report.tables import best_per_column

    rows = [{"config": "x", "fd_clip": 1.0, "clip_score": 20.0, "class_acc": 0.5, "trainable_params": 5},
            {"config": "y", "fd_clip": 0.5, "clip_score": 20.0, "class_acc": 0.5, "trainable_params": 0},
            {"config": "z", "fd_clip": 0.7, "clip_score": 10.0, "class_acc": 0.5, "trainable_params": 9}]
    best = best_per_column(rows, ["fd_clip", "clip_score", "class_acc", "trainable_params"])
    # lower FD wins; tied winners are all marked; a column where all tie has no best; counts are not ranked
    assert best == {"fd_clip": {1}, "clip_score": {0, 1}}


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

    table = asyncio.run(read("genvpt-metrics"))
    md = asyncio.run(read("genvpt-report"))
    assert table and table[0].type == "table"
    data = table[0].data if isinstance(table[0].data, list) else json.loads(table[0].data)
    assert [r["config"] for r in data] == ["a", "b", "c"]
    assert md and "FD-CLIP" in md[0].data and "| a |" in md[0].data


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


def test_prompt_kind_is_provided_by_the_prompts_area(monkeypatch):
    from genvpt.config import validate_params

    monkeypatch.delitem(sampling.SAMPLERS, "prompt", raising=False)
    loader = sampling._loader("prompt")  # imported and registered on first use
    from genvpt.prompts import sampler as prompt_sampler

    assert loader is prompt_sampler._load_for_sampling
    seen = []
    assert sampling._call_loader(lambda cfg, device: seen.append(2) or 2, None, None, None) == 2
    assert sampling._call_loader(lambda cfg, device, params: seen.append(3) or 3, None, None, "p") == 3
    with pytest.raises(ValueError, match="unknown sampler kind"):
        sampling._loader("nope")
    with pytest.raises(Exception, match="needs generator"):
        validate_params({"sample": {"configs": [{"name": "p", "kind": "prompt"}]}})


def test_prompt_rows_read_the_train_prompt_record(tmp_path):
    from genvpt.metrics.params import SampleConfig
    from genvpt.metrics.scoring import cost_metrics

    (tmp_path / "record.json").write_text(json.dumps({"trainable_params": 4660, "train_time_s": 31.5,
                                                      "peak_memory_mb": 900.0}))
    cfg = SampleConfig(name="mvp", kind="prompt", generator=str(tmp_path / "model.pt"))
    m = cost_metrics(cfg, {"sample_time_per_image_s": 0.01, "peak_memory_mb": 500.0, "model_params": 10})
    assert m == {"trainable_params": 4660, "train_time_s": 31.5, "train_peak_memory_mb": 900.0,
                 "sample_time_per_image_s": 0.01, "sample_peak_memory_mb": 500.0, "model_params": 10}


def test_memory_lines_compare_mvp_with_prefilled(tmp_path):
    from genvpt.report.build import memory_lines

    rows = [{"config": "var", "trainable_params": 0},
            {"config": "mvp", "train_peak_memory_mb": 900.0},
            {"config": "prefilled", "train_peak_memory_mb": 1200.0}]
    assert memory_lines(rows) == ["this pipeline (its own VAR and batch): MVP 900 MiB vs prefilled 1200 MiB peak "
                                  "training memory, ratio 0.75"]
    bench = tmp_path / "mvp_memory.json"
    bench.write_text(json.dumps({"depth": 16, "batch_size": 2, "device": "cpu", "ratio_peak": 0.9,
                                 "ratio_above_start": 0.81, "paper_ratio": 0.625,
                                 "runs": {"mvp": {"peak_mb": 4032.0}, "prefilled": {"peak_mb": 4480.0}}}))
    lines = memory_lines(rows, bench)
    assert len(lines) == 2 and "VAR-d16" in lines[1] and "ratio 0.90 (0.81 counting only" in lines[1]
    assert "0.625" in lines[1]
    assert memory_lines([{"config": "mvp", "train_peak_memory_mb": 1.0}], tmp_path / "absent.json") == []


def test_trainable_pct_from_the_training_record(tmp_path):
    from genvpt.metrics.params import SampleConfig
    from genvpt.metrics.scoring import cost_metrics

    rec = tmp_path / "p" / "record.json"
    rec.parent.mkdir()
    rec.write_text(json.dumps({"trainable_params": 8192, "trainable_pct": 0.65, "peak_memory_mb": 1400.0}))
    sample_record = {"sample_time_per_image_s": 0.01, "peak_memory_mb": 900.0}
    prompt = cost_metrics(SampleConfig(name="mvp", kind="prompt", generator=str(tmp_path / "p" / "model.pt")),
                          sample_record)
    assert prompt["trainable_pct"] == 0.65 and prompt["train_peak_memory_mb"] == 1400.0
    frozen = cost_metrics(SampleConfig(name="var", family="var", generator="g.pt", tokenizer="t.pt"), sample_record)
    assert frozen["trainable_params"] == 0 and frozen["trainable_pct"] == 0.0
