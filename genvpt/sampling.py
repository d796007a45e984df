"""Sample sets for evaluation: N seeded images per class from every model configuration in params (``sample``).

A sample set is a directory holding its images as one uncompressed tar (a WebDataset shard of PNG files) and a
record::

    data/samples/<config>/images.tar     members 000000.png 000001.png ... ; index order = label order (class 0 first)
    data/samples/<config>/record.json    n, labels, class names, seed, sampling time / image, peak memory

One file per set instead of one per image keeps DVC's checks of the sample stages' outputs (and of the score and
report stages' inputs) cheap: the default pipeline holds about 100 sets of 500-600 images. ``tar -xf images.tar
-C <folder>`` (or :meth:`SampleSet.extract`) gives the folder of PNG files torch-fidelity and other tools read. A
set written by hand as ``images/*.png`` beside its record.json is read as well.

Each configuration names a *kind* of sampler. ``backbone`` (a frozen generator plus its tokenizer, via
``genvpt.generators.load_backbone``) is built in; other areas register theirs with :func:`register_sampler`
(a loader ``(config, device) -> object with sample_images(labels, *, seed, batch_size, **kw) -> uint8 [N,3,H,W]``).
"""
from __future__ import annotations

import importlib
import inspect
import io
import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .datasets.shards import ShardError, iter_tar_samples, scan_shard
from .io import atomic_dir, read_json, write_json
from .sampling_params import SampleConfig, SampleParams
from .training import count_parameters, resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "SampleConfig",
    "SampleParams",
    "SAMPLERS",
    "register_sampler",
    "resolve_device",
    "sample_config",
    "run_sampling",
    "read_sample_set",
    "SampleSet",
    "IMAGES_SHARD",
    "ImageShardWriter",
    "write_sample_images",
    "png_bytes",
    "write_png",
]

IMAGES_SHARD = "images.tar"  # a sample set's images: members %06d.png in index order

# --------------------------------------------------------------------------------------------------------------
# sampler registry


def _load_backbone(cfg: SampleConfig, device: torch.device, params: Any = None):
    """A frozen generator + tokenizer; sampling settings from params' ``generator`` section, overridden by
    ``cfg.sampling`` at each call."""
    from .backbones import load_backbone
    from .generators import sample_settings

    for p in (cfg.generator, cfg.tokenizer):
        if not Path(p).is_file():
            raise FileNotFoundError(f"config {cfg.name!r}: model file {p} not found (train it first)")
    gp = getattr(params, "generator", None)
    defaults = sample_settings(gp, cfg.family) if gp is not None else None
    return load_backbone(cfg.family, cfg.generator, cfg.tokenizer, device=device, sample_defaults=defaults)


Loader = Callable[[SampleConfig, torch.device, Any], Any]
SAMPLERS: dict[str, Loader] = {"backbone": _load_backbone}


# kinds whose loader lives in another area: imported (and registered) on first use
PROVIDERS = {"adapted": "genvpt.adaptation.sampler"}


def _loader(kind: str) -> Loader:
    if kind not in SAMPLERS and kind in PROVIDERS:
        importlib.import_module(PROVIDERS[kind]).register()
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler kind {kind!r}; registered: {sorted(SAMPLERS)}")
    return SAMPLERS[kind]


def _call_loader(loader: Loader, cfg: SampleConfig, device: torch.device, params: Any) -> Any:
    """Loaders take (config, device) or (config, device, params)."""
    try:
        n = len(inspect.signature(loader).parameters)
    except (TypeError, ValueError):
        n = 3
    return loader(cfg, device, params) if n >= 3 else loader(cfg, device)


def register_sampler(kind: str, loader: Loader, *, replace: bool = False) -> None:
    """Register a sampler kind: ``loader(config, device)`` or ``loader(config, device, params)`` (params: the whole
    validated params.yaml, or None) returns an object with ``sample_images(labels, *, seed, batch_size, **kw) -> uint8 [N,3,H,W]``."""
    if kind in SAMPLERS and not replace:
        raise ValueError(f"sampler kind {kind!r} is already registered")
    SAMPLERS[kind] = loader


def _model_params(sampler: Any) -> Optional[int]:
    """Total parameters of the sampler's networks (generator + tokenizer) when they are visible."""
    if isinstance(sampler, torch.nn.Module):
        return count_parameters(sampler)
    mods = {id(m): m for m in vars(sampler).values() if isinstance(m, torch.nn.Module)} if hasattr(sampler, "__dict__") else {}
    return sum(count_parameters(m) for m in mods.values()) if mods else None


def _conditioning_texts(sampler: Any, labels: torch.Tensor) -> Optional[list[str]]:
    """The text each sample was conditioned on, when the sampler conditions on text (text-to-image prompt
    configurations sample class c from ``sentences[c]``); None for class-conditional samplers (the score stage then
    derives the text from the class name)."""
    sentences = getattr(sampler, "sentences", None)
    if getattr(sampler, "text_to_image", False) and sentences:
        return [sentences[int(c)] for c in labels]
    return None


def png_bytes(img: np.ndarray) -> bytes:
    """The PNG file of one uint8 [H,W,3] image (zlib level 1: fast, and the same bytes for the same pixels)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_png(path: Path, img: np.ndarray) -> None:
    Path(path).write_bytes(png_bytes(img))


class ImageShardWriter:
    """Writes a sample set's ``images.tar`` with WebDataset's TarWriter, as the prepare stage writes its shards
    (fixed mtime): PNG members ``000000.png``, ``000001.png``, ... in the order added; the same images give the same
    bytes."""

    def __init__(self, path: str | os.PathLike):
        import webdataset as wds

        from .datasets.shards import FIXED_MTIME

        self.path = Path(path)
        self.n = 0
        self._tar = wds.TarWriter(str(self.path), mtime=FIXED_MTIME)

    def add_png(self, data: bytes) -> None:
        self._tar.write({"__key__": f"{self.n:06d}", "png": data})
        self.n += 1

    def add(self, images_NHWC: np.ndarray) -> None:
        for im in images_NHWC:
            self.add_png(png_bytes(im))

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> "ImageShardWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_sample_images(directory: str | os.PathLike, images: torch.Tensor) -> Path:
    """``directory/images.tar`` from uint8 [N,3,H,W] images (index order); returns the shard's path."""
    path = Path(directory) / IMAGES_SHARD
    with ImageShardWriter(path) as w:
        w.add(images.permute(0, 2, 3, 1).cpu().numpy())
    return path


def _chunk_seed(seed: int, chunk: int) -> int:
    return (int(seed) * 1_000_003 + chunk) % (2**63 - 1)


# --------------------------------------------------------------------------------------------------------------
# sampling one configuration


def sample_config(
    cfg: SampleConfig,
    class_names: list[str],
    params: SampleParams,
    out_dir: str | os.PathLike,
    *,
    sampler: Any = None,
    full_params: Any = None,
    show_progress: bool = True,
    seed: Optional[int] = None,
    record_extra: Optional[dict] = None,
) -> dict:
    """Sample ``images_per_class`` images of every class from ``cfg`` into ``out_dir`` (atomic); return the record.
    ``seed``: the sampling seed (default ``params.seed``); ``record_extra``: fields added to record.json."""
    sampling_seed = params.seed if seed is None else int(seed)
    device = resolve_device(params.device, "sample.device")
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if sampler is None:
        sampler = _call_loader(_loader(cfg.kind), cfg, device, full_params)
    load_s = time.perf_counter() - t0
    num_classes = getattr(sampler, "num_classes", None)
    if num_classes is not None and int(num_classes) < len(class_names):
        raise ValueError(
            f"config {cfg.name!r}: the model knows {num_classes} classes but the target has {len(class_names)}"
        )
    n_per = params.images_per_class
    labels = torch.arange(len(class_names)).repeat_interleave(n_per)
    n = len(labels)
    bs = params.batch_size
    n_chunks = math.ceil(n / bs)
    sample_s = 0.0
    shape = None
    with atomic_dir(out_dir) as tmp, ImageShardWriter(tmp / IMAGES_SHARD) as shard:
        with torch.inference_mode():
            for c in tqdm(range(n_chunks), desc=f"sample {cfg.name}", unit="batch", disable=not show_progress):
                lab = labels[c * bs:(c + 1) * bs].to(device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                ts = time.perf_counter()
                imgs = sampler.sample_images(lab, seed=_chunk_seed(sampling_seed, c), batch_size=bs, **cfg.sampling)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                sample_s += time.perf_counter() - ts
                if not (torch.is_tensor(imgs) and imgs.dtype == torch.uint8 and imgs.dim() == 4
                        and imgs.shape[0] == len(lab) and imgs.shape[1] == 3):
                    raise ValueError(
                        f"config {cfg.name!r}: sample_images must return uint8 [B,3,H,W] with B={len(lab)}, got "
                        f"{getattr(imgs, 'dtype', type(imgs))} {tuple(getattr(imgs, 'shape', ()))}"
                    )
                shape = tuple(imgs.shape[1:])
                shard.add(imgs.permute(0, 2, 3, 1).cpu().numpy())
        from .training import peak_memory_mb

        record = {
            "config": cfg.model_dump(mode="json"),
            "name": cfg.name,
            "n": n,
            "images_per_class": n_per,
            "class_names": list(class_names),
            "labels": labels.tolist(),
            "texts": _conditioning_texts(sampler, labels),
            "sampling_seed": sampling_seed,
            "batch_size": bs,
            "image_shape": list(shape) if shape else None,
            "device": str(device),
            "load_time_s": load_s,
            "sample_time_s": sample_s,
            "sample_time_per_image_s": sample_s / max(n, 1),
            "peak_memory_mb": peak_memory_mb(device),
            "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
            "model_params": _model_params(sampler),
            **(record_extra or {}),
        }
        write_json(tmp / "record.json", record)
    log.info("%s: %d images in %.1f s (%.4f s/image), peak memory %.0f MiB", cfg.name, n, sample_s,
             record["sample_time_per_image_s"], record["peak_memory_mb"])
    return record


def _sample_in_child(cfg_json: dict, class_names: list[str], params_json: dict, full_json: Optional[dict],
                     out_dir: str, seed: Optional[int] = None, record_extra: Optional[dict] = None) -> dict:
    from .config import validate_params
    from .logs import setup_logging

    setup_logging()
    full = validate_params(full_json) if full_json is not None else None
    return sample_config(SampleConfig.model_validate(cfg_json), class_names,
                         SampleParams.model_validate(params_json), out_dir, full_params=full, seed=seed,
                         record_extra=record_extra)


def _sample_one(cfg: SampleConfig, class_names: list[str], params: SampleParams, out: Path, full_params: Any,
                seed: Optional[int], extra: dict) -> dict:
    device = resolve_device(params.device, "sample.device")
    if params.isolate and device.type == "cpu":
        # a fresh process per sample set: its max RSS is this model's peak memory
        full_json = full_params.model_dump(mode="json") if full_params is not None else None
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_sample_in_child, cfg.model_dump(mode="json"), list(class_names),
                               params.model_dump(mode="json"), full_json, str(out), seed, extra).result()
    return sample_config(cfg, class_names, params, out, full_params=full_params, seed=seed, record_extra=extra)


def sample_frozen_row(params: SampleParams, class_names: list[str], out_dir: str | os.PathLike, *, family: str,
                      generator: str, tokenizer: str, full_params: Any = None) -> list[dict]:
    """A frozen backbone's report row: one sample set per sampling seed (``sample.sampling_seeds``) under
    ``out_dir/seed-<s>/`` (their spread is the sampling noise). The whole row is written atomically."""
    row = Path(out_dir).name
    cfg = SampleConfig(name=row, kind="backbone", family=family, generator=str(generator), tokenizer=str(tokenizer))
    records = []
    with atomic_dir(out_dir) as tmp:
        for s in params.sampling_seeds:
            extra = {"row": row, "kind": "frozen", "backbone": family, "method": None, "seed": int(s),
                     "spread_over": "sampling_seed", "train_record": None, "trainable_params": 0}
            records.append(_sample_one(cfg, class_names, params, tmp / f"seed-{s}", full_params, int(s), extra))
    return records


def sample_adapted_row(params: SampleParams, class_names: list[str], out_dir: str | os.PathLike, *, models_dir: str,
                       seeds: list[int], full_params: Any = None) -> list[dict]:
    """An adapted configuration's report row: one sample set per training seed (``models_dir/seed-<s>/model.pt``,
    sampled with sampling seed ``sample.seed``) under ``out_dir/seed-<s>/``; written atomically."""
    row = Path(out_dir).name
    records = []
    with atomic_dir(out_dir) as tmp:
        for s in seeds:
            model = Path(models_dir) / f"seed-{s}" / "model.pt"
            rec_path = model.parent / "record.json"
            train_rec = read_json(rec_path) if rec_path.is_file() else {}
            cfg = SampleConfig(name=row, kind="adapted", generator=str(model), train_record=str(rec_path),
                               curves=[str(model.parent / "curve.csv")])
            extra = {"row": row, "kind": "adapted", "backbone": train_rec.get("backbone"),
                     "method": train_rec.get("method"), "seed": int(s), "spread_over": "training_seed",
                     "train_record": str(rec_path), "trainable_params": train_rec.get("trainable_params")}
            records.append(_sample_one(cfg, class_names, params, tmp / f"seed-{s}", full_params, None, extra))
    return records


def run_sampling(
    params: SampleParams,
    class_names: list[str],
    out_root: str | os.PathLike,
    only: Optional[list[str]] = None,
    *,
    full_params: Any = None,
) -> list[dict]:
    """Sample every configuration (or the named ones) into ``out_root/<name>``. ``full_params`` (the whole validated
    params) is handed to the sampler loaders (e.g. the generators' sampling settings)."""
    if only:
        unknown = sorted(set(only) - {c.name for c in params.configs})
        if unknown:
            raise ValueError(f"unknown config(s) {unknown}; params sample.configs has {[c.name for c in params.configs]}")
    configs = [c for c in params.configs if not only or c.name in only]
    device = resolve_device(params.device, "sample.device")
    records = []
    for cfg in configs:
        out = Path(out_root) / cfg.name
        if params.isolate and device.type == "cpu":
            # a fresh process per configuration: its max RSS is this configuration's peak memory
            full_json = full_params.model_dump(mode="json") if full_params is not None else None
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                rec = pool.submit(_sample_in_child, cfg.model_dump(mode="json"), list(class_names),
                                  params.model_dump(mode="json"), full_json, str(out)).result()
        else:
            rec = sample_config(cfg, class_names, params, out, full_params=full_params)
        records.append(rec)
    return records


# --------------------------------------------------------------------------------------------------------------
# reading a sample set back


class SampleSet:
    """A sample set on disk: ``images`` uint8 [N,3,H,W], ``labels``, ``texts`` (or None) and the record. The images
    are ``images.tar`` (what the sample stage writes) or, for a set made by hand, a folder ``images/*.png``."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        rec_path = self.dir / "record.json"
        if not rec_path.is_file():
            raise FileNotFoundError(f"{rec_path} not found: sample set {self.dir} is missing or incomplete")
        self.record = read_json(rec_path)
        n = int(self.record["n"])
        self.shard = self.dir / IMAGES_SHARD
        self.image_dir = self.dir / "images"
        if self.shard.is_file():
            keys = scan_shard(self.shard, SampleShardError)  # headers checked, data skipped
            want = [f"{i:06d}" for i in range(n)]
            if keys != want:
                raise SampleShardError(f"{self.shard}: {len(keys)} members {_first_diff(keys, want)}; record.json "
                                       f"says n={n} (members 000000.png ... {n - 1:06d}.png expected)")
            self.files: Optional[list[Path]] = None
        elif self.image_dir.is_dir():
            files = sorted(self.image_dir.glob("*.png"))
            if len(files) != n:
                raise ValueError(f"{self.image_dir}: {len(files)} PNG files but record.json says n={n}")
            self.files = files
        else:
            raise FileNotFoundError(f"sample set {self.dir} has neither {IMAGES_SHARD} nor an images/ folder")

    @property
    def images_path(self) -> Path:
        """Where the images are: ``images.tar``, or the ``images/`` folder of a set made by hand."""
        return self.image_dir if self.files is not None else self.shard

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self.record["labels"], dtype=torch.long)

    @property
    def texts(self) -> Optional[list[str]]:
        return self.record.get("texts")

    def pngs(self) -> Iterator[tuple[str, bytes]]:
        """(file name, PNG bytes) of every image, in index order."""
        if self.files is not None:
            for f in self.files:
                yield f.name, f.read_bytes()
            return
        for sample in iter_tar_samples(self.shard, SampleShardError):
            if "png" not in sample:
                raise SampleShardError(f"{self.shard}: sample {sample['__key__']!r} has no .png member")
            yield f"{sample['__key__']}.png", sample["png"]

    def load_images(self) -> torch.Tensor:
        return _decode_rgb((io.BytesIO(data) for _, data in self.pngs()), self.dir)

    def extract(self, folder: str | os.PathLike) -> Path:
        """The images as PNG files ``folder/000000.png`` ... (the folder torch-fidelity and other tools read)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in self.pngs():
            (out / name).write_bytes(data)
        return out


class SampleShardError(ShardError, ValueError):
    """A sample set's images.tar is unreadable, unsafe, cut short or does not match its record.json."""


def _first_diff(keys: list[str], want: list[str]) -> str:
    for a, b in zip(keys, want):
        if a != b:
            return f"({a!r} where {b!r} belongs)"
    return "(some missing)" if len(keys) < len(want) else "(more than expected)" if len(keys) > len(want) else ""


def _decode_rgb(sources: Iterable[Any], where: Path) -> torch.Tensor:
    """uint8 [N,3,H,W] from image files or file objects; images of different sizes are an error naming ``where``."""
    arrs = []
    for f in sources:
        with Image.open(f) as im:
            arrs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    sizes = {a.shape for a in arrs}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)} in {where}")
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def load_png_files(files: list[Path]) -> torch.Tensor:
    return _decode_rgb(files, files[0].parent)


def read_sample_set(directory: str | os.PathLike) -> SampleSet:
    return SampleSet(directory)
