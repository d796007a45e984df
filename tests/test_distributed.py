"""Multi-process training (genvpt/distributed.py): two CPU processes on gloo under torchrun train what one process
trains on the same global batch, up to float tolerance; only rank 0 writes; resume works; bad values name the key."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genvpt import distributed
from genvpt.checkpoint import load_model_file
from genvpt.config import ConfigError, validate_params

import _dist_worker as W

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
# float32 sums over two half batches in another order, then a few AdamW steps (lr 1e-2): measured max |diff| 2.5e-6
RTOL, ATOL = 1e-4, 1e-5
# The attention's key bias has a gradient that is zero in exact arithmetic (softmax ignores a constant added to every
# key's score): AdamW normalises its float noise (~1e-10) into steps of up to lr in either direction, in one process
# as in two, so these entries are noise of both runs and agree only within lr * steps.
ZERO_GRADIENT = ("attn.key.bias",)


def _torchrun(case: str, tmp_path: Path) -> tuple[list[dict], list[str], Path]:
    """Run ``case`` of tests/_dist_worker.py on 2 gloo processes; return each rank's result, the fail points the
    processes reached (``<point> <pid>``: every genvpt file write and checkpoint) and the work folder."""
    work, results, trace = tmp_path / "dist", tmp_path / "results", tmp_path / "writes.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENVPT_FAULT_LOG": str(trace), "GENVPT_LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.pop("GENVPT_FAULT", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "_dist_worker.py"), case, str(work), str(results)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    writes = trace.read_text().splitlines() if trace.exists() else []
    return ranks, writes, work


def _close(a: torch.Tensor, b: torch.Tensor, name: str = "", noise: float = 0.0) -> float:
    """Max |a - b| over the entries with a real gradient, after checking them against RTOL / ATOL (the entries whose
    gradient is zero in exact arithmetic only within ``noise``)."""
    assert a.shape == b.shape and a.dtype == b.dtype, name
    if torch.equal(a, b):  # also buffers (masks holding -inf) and integer tensors
        return 0.0
    assert a.is_floating_point(), name
    if name.endswith(ZERO_GRADIENT):
        assert (a - b).abs().max() <= noise, name
        return 0.0
    if name.endswith("mha.in_proj_bias"):  # nn.MultiheadAttention's [q; k; v] biases: the key third as above
        D = a.shape[0] // 3
        assert (a[D:2 * D] - b[D:2 * D]).abs().max() <= noise, name
        a, b = torch.cat([a[:D], a[2 * D:]]), torch.cat([b[:D], b[2 * D:]])
    assert torch.allclose(a, b, rtol=RTOL, atol=ATOL), (name, (a - b).abs().max())
    return float((a - b).abs().max())


def _only_rank0_wrote(writes: list[str], ranks: list[dict]) -> None:
    assert writes, "no file was written"
    pids = {int(line.rsplit(" ", 1)[1]) for line in writes}
    assert pids == {ranks[0]["pid"]}, (pids, ranks[0]["pid"], ranks[1]["pid"])


def test_generator_pretraining_on_two_processes_equals_one(tmp_path):
    single = W.generator_runs(tmp_path / "single")
    ranks, writes, work = _torchrun("generator", tmp_path)
    _only_rank0_wrote(writes, ranks)
    worst = 0.0
    for fam in [*W.FAMILIES, "ar-resumed"]:
        one, r0, r1 = single[fam], ranks[0][fam], ranks[1][fam]
        assert r0["summary"]["world_size"] == 2 and "world_size" not in one["summary"]
        for k, v in one["state"].items():
            worst = max(worst, _close(r0["state"][k], v, k, noise=1e-2 * W.GEN_STEPS))
            assert torch.equal(r0["state"][k], r1["state"][k]), k  # the ranks hold the same weights
        assert len(r0["history"]) == len(one["history"]) == W.GEN_STEPS
        for a, b in zip(r0["history"], one["history"]):
            assert a["step"] == b["step"] and a["lr"] == b["lr"]
            assert a["loss"] == pytest.approx(b["loss"], rel=RTOL, abs=ATOL)
            assert (a["val_loss"] == "") == (b["val_loss"] == "")
            if b["val_loss"] != "":
                assert a["val_loss"] == pytest.approx(b["val_loss"], rel=RTOL, abs=ATOL)
        assert r1["history"] == r0["history"]  # logged losses are the global batch's on every rank
    assert ranks[0]["ar-resumed"]["summary"]["resumed_from_step"] == 3
    assert ranks[1]["ar-resumed"]["summary"]["resumed_from_step"] == 3  # rank 1 loaded rank 0's state
    for fam in W.FAMILIES:
        assert sorted(p.name for p in (work / fam).iterdir()) == ["train_state.pt"]
    print(f"generator: max |two processes - one| = {worst:.3g}")


def test_prompt_training_on_two_processes_equals_one(tmp_path):
    single = W.adapt_runs(tmp_path / "single")
    ranks, writes, work = _torchrun("adapt", tmp_path)
    _only_rank0_wrote(writes, ranks)
    worst = 0.0
    for name in [*W.ADAPT_CASES, "vpt-resumed"]:
        one, r0, r1 = single[name]["record"], ranks[0][name]["record"], ranks[1][name]["record"]
        assert r0["world_size"] == 2 and "world_size" not in one and r0["batch_size"] == one["batch_size"] == 8
        for key in ("first_loss", "final_loss", "first_task_loss", "final_task_loss"):
            assert r0[key] == pytest.approx(one[key], rel=RTOL, abs=ATOL) and r1[key] == r0[key], key
        # the trained state (prompts, LoRA matrices) written by rank 0 vs the single process's
        _, sd_one, _ = load_model_file(tmp_path / "single" / name / "model.pt", "adapted")
        _, sd_two, _ = load_model_file(work / name / "model.pt", "adapted")
        assert sd_one.keys() == sd_two.keys() and sd_one
        for k in sd_one:
            worst = max(worst, _close(sd_two[k], sd_one[k], k, noise=1e-2 * 4))
        curve_one = (tmp_path / "single" / name / "curve.csv").read_text().splitlines()
        curve_two = (work / name / "curve.csv").read_text().splitlines()
        assert curve_one[0] == curve_two[0] and len(curve_one) == len(curve_two) == 5
        for a, b in zip(curve_one[1:], curve_two[1:]):
            for x, y in zip(a.split(","), b.split(",")):
                assert float(x) == pytest.approx(float(y), rel=RTOL, abs=ATOL)
        assert sorted(p.name for p in (work / name).iterdir()) == ["curve.csv", "done.json", "model.pt",
                                                                  "record.json"]
        assert json.loads((work / name / "record.json").read_text())["world_size"] == 2
    for name in W.ADAPT_CASES:
        if name != "lora-ar":  # the frozen backbone is bit-for-bit unchanged on both ranks
            for r in ranks:
                assert r[name]["generator_before"] == r[name]["generator_after"]
    assert ranks[0]["vpt-resumed"]["stopped"] == ranks[1]["vpt-resumed"]["stopped"] == {"stopped_at": 2}
    print(f"prompt training: max |two processes - one| = {worst:.3g}")


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match=r"distributed\.nproc_per_node"):
        validate_params({"distributed": {"nproc_per_node": 0}})
    with pytest.raises(ConfigError, match=r"generator\.ar\.train\.batch_size: 64 does not divide by "
                                          r"distributed\.nproc_per_node 3"):
        validate_params({"distributed": {"nproc_per_node": 3}})
    with pytest.raises(ConfigError, match=r"adaptation\.configs\.odd\.train\.batch_size: 6 does not divide"):
        validate_params({"distributed": {"nproc_per_node": 4},
                         "adaptation": {"configs": {"odd": {"backbone": "ar", "method": "vpt",
                                                            "train": {"batch_size": 6}}}}})
    validate_params({"distributed": {"nproc_per_node": 2}})  # the shipped batch sizes divide by 2
    # at run time (the batch is capped at the number of samples): the key in the message
    with pytest.raises(ValueError, match=r"adaptation\.configs\.x\.train\.batch_size: the global batch of 10"):
        distributed.batch_shard(10, "adaptation.configs.x.train.batch_size", world=4, at=1)
    assert distributed.batch_shard(12, "k", world=4, at=3).rows == slice(9, 12)


def test_one_process_draws_as_before_and_a_shard_draws_the_global_rows():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(distributed.batch_rand(6, 3, generator=g1), torch.rand(6, 3, generator=g2))
    drop = torch.nn.Dropout(0.5).train()
    x = torch.randn(6, 4)
    torch.manual_seed(1)
    full = drop(x)
    for r in range(3):
        shard = distributed.batch_shard(6, "k", world=3, at=r)
        g = torch.Generator().manual_seed(5)
        with shard:
            assert torch.equal(distributed.batch_rand(2, 3, generator=g), torch.rand(6, 3, generator=g2.manual_seed(5))[shard.rows])
            torch.manual_seed(1)
            assert torch.equal(distributed.batch_dropout(drop, x[shard.rows]), full[shard.rows])
            with pytest.raises(RuntimeError, match="batch shard of 2 rows"):
                distributed.batch_rand(3)
    assert not distributed.in_shard()


def test_relaunch_under_torchrun(monkeypatch):
    dp = distributed.DistributedParams(nproc_per_node=2)
    assert distributed.torchrun_command("stages.adapt", ["--config", "x"], 2, python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "stages.adapt",
        "--config", "x"]
    assert not distributed.relaunch_under_torchrun(distributed.DistributedParams(), "stages.adapt", [])
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.get(k, "0" if "RANK" in k else "2"))
    assert distributed.launch_env().world_size == 2
    assert not distributed.relaunch_under_torchrun(dp, "stages.adapt", [])  # torchrun started this one
    monkeypatch.delenv("RANK")
    ran = []

    class Done:
        def __init__(self, cmd):
            ran.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(distributed.subprocess, "Popen", Done)
    assert distributed.relaunch_under_torchrun(dp, "stages.adapt", ["--out", "o"])
    assert ran[0][1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                          "stages.adapt", "--out", "o"]


def test_the_stage_relaunches_itself_under_torchrun(tmp_path):
    """``python -m stages.pretrain_generator`` with distributed.nproc_per_node 2 (dvc.yaml's command unchanged)
    re-launches under torchrun; its model equals the one-process stage's, and metrics.json records the world size."""
    import yaml

    from genvpt.classifier import save_classifier, train_classifier
    from genvpt.generators import load_generator
    from genvpt.tokenizers import save_tokenizer
    from test_generator_stage import _params, _write_tokens, colour_images
    from test_generator_training import tiny_vqgan

    vq = tiny_vqgan()
    save_tokenizer(tmp_path / "vqgan.pt", vq)
    _write_tokens(tmp_path / "tokens", vq, "vqgan")
    x, y = colour_images(30, 2)
    model, rep = train_classifier(x, y, x, y, num_classes=3, width=4, epochs=1, batch_size=16, seed=0)
    save_classifier(tmp_path / "cls.pt", model, ["r", "g", "b"], val_accuracy=rep["val_accuracy"])
    base = yaml.safe_load(_params(tmp_path).read_text())
    base["generator"]["maskgit"]["train"]["precision"] = "fp32"  # no bf16 autocast on CPUs that have it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENVPT_LOG_LEVEL": "WARNING"}
    outs = {}
    for n in (1, 2):
        params = tmp_path / f"params{n}.yaml"
        params.write_text(yaml.safe_dump({**base, "distributed": {"nproc_per_node": n}}))
        outs[n] = tmp_path / f"out{n}"
        proc = subprocess.run([sys.executable, "-m", "stages.pretrain_generator", "--family", "maskgit", "--tokens",
                               str(tmp_path / "tokens"), "--tokenizer", str(tmp_path / "vqgan.pt"), "--classifier",
                               str(tmp_path / "cls.pt"), "--out", str(outs[n]), "--params", str(params)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = {n: json.loads((outs[n] / "metrics.json").read_text()) for n in (1, 2)}
    assert metrics[2]["world_size"] == 2 and "world_size" not in metrics[1]
    assert metrics[2]["final_train_loss"] == pytest.approx(metrics[1]["final_train_loss"], rel=RTOL, abs=ATOL)
    assert sorted(p.name for p in outs[2].iterdir()) == sorted(p.name for p in outs[1].iterdir())
    one, two = load_generator(outs[1] / "model.pt").state_dict(), load_generator(outs[2] / "model.pt").state_dict()
    for k in one:
        _close(two[k], one[k], k, noise=1e-3 * 6)


def test_classifier_prompts_on_two_processes_equal_one(tmp_path):
    """classify@'s training loop (genvpt/classify/train.py) on 2 gloo processes: the global batch's augmentations
    sliced per rank, gradients averaged. Methods without batch statistics end where one process ends; PGN (BatchNorm
    over each rank's slice) keeps identical trainable weights on both ranks and trains."""
    single = W.classify_runs(tmp_path / "single")
    ranks, writes, work = _torchrun("classify", tmp_path)
    _only_rank0_wrote(writes, ranks)
    worst = 0.0
    for name in [*W.CLASSIFY_CASES, "iip-resumed"]:
        one, r0, r1 = single[name]["record"], ranks[0][name]["record"], ranks[1][name]["record"]
        assert r0["world_size"] == 2 and "world_size" not in one and r0["batch_size"] == one["batch_size"] == 8
        _, sd_one, _ = load_model_file(tmp_path / "single" / name / "model.pt", "classify")
        _, sd_two, _ = load_model_file(work / name / "model.pt", "classify")
        assert sd_one.keys() == sd_two.keys() and sd_one
        assert sorted(p.name for p in (work / name).iterdir()) == ["curve.csv", "model.pt", "record.json"]
        if name == "pgn":  # per-rank batch statistics: agrees in distribution only, but it trained on both ranks
            assert r0["final_loss"] == r1["final_loss"] and r0["final_loss"] < r0["first_loss"] + 1.0
            continue
        assert r0["first_loss"] == pytest.approx(one["first_loss"], rel=RTOL, abs=ATOL)
        assert r0["final_loss"] == pytest.approx(one["final_loss"], rel=RTOL, abs=ATOL)
        assert r1["final_loss"] == r0["final_loss"]  # logged losses are the global batch's on every rank
        if name != "iip-resumed":
            assert r0["eval"]["val"]["top1"] == one["eval"]["val"]["top1"]
        for k in sd_one:
            worst = max(worst, _close(sd_two[k], sd_one[k], k))
    for name in W.CLASSIFY_CASES:  # the frozen towers are bit-for-bit unchanged on both ranks
        for r in ranks:
            assert r[name]["before"] == r[name]["after"]
    assert ranks[0]["iip-resumed"]["stopped"] == ranks[1]["iip-resumed"]["stopped"] == {"stopped_at": 2}
    print(f"classifier prompts: max |two processes - one| = {worst:.3g}")
