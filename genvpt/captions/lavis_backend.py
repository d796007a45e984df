"""``lavis`` backend: LAVIS ``blip2_opt`` / ``caption_coco_opt2.7b`` in its own environment, as a subprocess.

salesforce-lavis 1.0.2 pins transformers<4.27, timm 0.4.12 and numpy<2 (opencv 4.5.5), so it cannot share the main
environment (../shared/reference/install-notes.md). ``make lavis-env`` builds ``.venv-lavis`` from
genvpt/captions/lavis_requirements.txt; this backend runs genvpt/captions/lavis_worker.py with that interpreter
(``caption.lavis.python``), passing the prepared shard files and the keys still to caption. The worker appends
one JSON line per caption to a file that this process reads while the worker runs and hands to the stage's sink,
so the stage's partial store (and resumption) works exactly as for the in-process backends.

Prompt: with ``caption.prompt`` empty, LAVIS's model prompt is used (caption_coco_opt2.7b: "a photo of"), as the
paper's BLIP-2 captions were made; LAVIS strips it from the output.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .params import LAVIS_MODELS, CaptionParams
from .run import CaptionError, CaptionerUnavailable, MissingWeightsError, Sample, Sink

log = logging.getLogger(__name__)

__all__ = ["LavisBlip2", "WORKER", "REQUIREMENTS"]

WORKER = Path(__file__).resolve().parent / "lavis_worker.py"
REQUIREMENTS = Path(__file__).resolve().parent / "lavis_requirements.txt"
EXIT_MISSING_WEIGHTS = 3
EXIT_NO_LAVIS = 4


class LavisBlip2:
    def __init__(self, params: CaptionParams, poll_s: float = 1.0):
        self.params = params
        lp = params.lavis
        self.poll_s = poll_s
        self.captioner = f"lavis:{lp.name}/{lp.model_type}"
        self.settings = {
            "prompt": params.prompt or "<model default>",
            "num_beams": 1 if lp.use_nucleus_sampling else params.num_beams,
            "max_length": params.max_new_tokens,
            "min_length": params.min_new_tokens,
            "repetition_penalty": params.repetition_penalty,
            "length_penalty": params.length_penalty,
            "use_nucleus_sampling": lp.use_nucleus_sampling,
            "top_p": lp.top_p,
            "checkpoint": lp.checkpoint,
        }

    def python(self) -> Path:
        py = Path(self.params.lavis.python).expanduser()
        if not py.exists():
            raise CaptionerUnavailable(
                f"the LAVIS environment's interpreter {self.params.lavis.python!r} does not exist: build it with "
                f"`make lavis-env` (a separate venv from {REQUIREMENTS.name}), or set caption.lavis.python, or use "
                f"caption.backend: transformers (the maintained path to the same BLIP-2 weights)"
            )
        return py

    def command(self, shards: list[Path], keys_file: Path, out_file: Path) -> list[str]:
        """The worker's argument list (run without a shell): only validated values travel. Paths must exist (the
        output file's folder), the model is one of ``LAVIS_MODELS``, numbers are re-parsed and finite; raises
        :class:`CaptionError` naming the offending setting."""
        p, lp = self.params, self.params.lavis
        if lp.model_type not in LAVIS_MODELS.get(lp.name, ()):
            raise CaptionError(f"caption.lavis: model {lp.name!r}/{lp.model_type!r} is not allowed; allowed: "
                               + "; ".join(f"{n}: {', '.join(t)}" for n, t in LAVIS_MODELS.items()))
        if p.device not in ("auto", "cpu", "cuda"):
            raise CaptionError(f"caption.device {p.device!r} is not one of auto, cpu, cuda")
        if not shards:
            raise CaptionError("the LAVIS worker needs at least one prepared shard")
        for f, what in [*((s, "prepared shard") for s in shards), (keys_file, "keys file")]:
            if not Path(f).is_file():
                raise CaptionError(f"{what} {f} does not exist")
        if not Path(out_file).parent.is_dir():
            raise CaptionError(f"the output folder {Path(out_file).parent} does not exist")
        checkpoint = None
        if lp.checkpoint:
            checkpoint = Path(lp.checkpoint).expanduser().resolve()
            if not checkpoint.is_file():
                raise CaptionError(f"caption.lavis.checkpoint {lp.checkpoint!r} does not exist")
        ints = {"batch_size": p.batch_size, "num_beams": p.num_beams, "max_new_tokens": p.max_new_tokens,
                "min_new_tokens": p.min_new_tokens}
        floats = {"lavis.top_p": lp.top_p, "repetition_penalty": p.repetition_penalty,
                  "length_penalty": p.length_penalty}
        for k, v in ints.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise CaptionError(f"caption.{k} must be a non-negative integer, got {v!r}")
        for k, v in floats.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CaptionError(f"caption.{k} must be a finite number, got {v!r}")
        cmd = [
            str(self.python()), str(WORKER), "--shards", *(str(Path(s).resolve()) for s in shards),
            "--keys", str(keys_file), "--out", str(out_file),
            "--name", lp.name, "--model-type", lp.model_type, "--device", p.device,
            "--batch-size", str(int(p.batch_size)), "--num-beams", str(int(p.num_beams)),
            "--max-length", str(int(p.max_new_tokens)), "--min-length", str(int(p.min_new_tokens)),
            "--top-p", repr(float(lp.top_p)), "--repetition-penalty", repr(float(p.repetition_penalty)),
            "--length-penalty", repr(float(p.length_penalty)),
        ]
        if p.prompt:
            cmd.append(f"--prompt={p.prompt}")  # one token: a prompt starting with '-' is never read as an option
        if checkpoint is not None:
            cmd += ["--checkpoint", str(checkpoint)]
        if lp.use_nucleus_sampling:
            cmd.append("--nucleus")
        return cmd

    def caption(self, prepared_dir: Path, todo: Sequence[Sample], sink: Sink) -> None:
        from ..datasets.shards import shard_paths

        splits = sorted({s.split for s in todo})
        shards = [p.resolve() for s in splits for p in shard_paths(prepared_dir, s)]
        with tempfile.TemporaryDirectory(prefix="genvpt-lavis-") as tmp:
            keys_file, out_file, err_file = Path(tmp) / "keys.txt", Path(tmp) / "captions.jsonl", Path(tmp) / "stderr.txt"
            keys_file.write_text("".join(s.key + "\n" for s in todo), encoding="utf-8")
            out_file.touch()
            cmd = self.command(shards, keys_file, out_file)
            log.info("running the LAVIS worker: %s", " ".join(cmd[:2]))
            with open(err_file, "wb") as err, open(out_file, "rb") as reader:
                env = dict(os.environ)
                if self.params.local_files_only:  # fail at once instead of retrying unreachable hubs
                    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
                proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, cwd=os.getcwd(), env=env, shell=False)
                pending = b""
                delay = 0.02  # poll fast at first (quick failures), back off to poll_s while the model works
                try:
                    while True:
                        finished = proc.poll() is not None
                        chunk = reader.read()
                        delay = 0.02 if chunk else min(self.poll_s, delay * 2)
                        if chunk:
                            pending += chunk
                            *lines, pending = pending.split(b"\n")
                            rows = [json.loads(line) for line in lines if line.strip()]
                            if rows:
                                sink([(r["key"], r["caption"]) for r in rows])
                        if finished:
                            break
                        time.sleep(delay)
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
            tail = err_file.read_text(errors="replace")[-3000:]
            if proc.returncode == EXIT_MISSING_WEIGHTS:
                msg = next((line for line in tail.splitlines() if "MISSING_WEIGHTS" in line), tail.strip())
                raise MissingWeightsError(
                    f"{msg.split('MISSING_WEIGHTS: ', 1)[-1]}. To provide them: pre-populate the torch hub cache "
                    f"($TORCH_HOME) and the Hugging Face cache ($HF_HOME) on a machine with network access and copy them "
                    f"here, or set caption.lavis.checkpoint to a local BLIP-2 .pth; or use caption.backend: dataset"
                )
            if proc.returncode == EXIT_NO_LAVIS:
                raise CaptionerUnavailable(f"LAVIS does not import in {cmd[0]}; rebuild it with `make lavis-env`.\n{tail}")
            if proc.returncode != 0:
                raise CaptionError(f"the LAVIS worker failed (exit {proc.returncode}); its output:\n{tail}")
