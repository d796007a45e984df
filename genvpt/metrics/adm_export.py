"""A sample set as the ``.npz`` batch OpenAI's ADM evaluator reads (guided-diffusion ``evaluations/evaluator.py``).

    python -m genvpt.metrics.adm_export data/samples/var/seed-0 var-seed0.npz --size 256
    python evaluations/evaluator.py VIRTUAL_imagenet256_labeled.npz var-seed0.npz   # in guided-diffusion's env

The evaluator opens the zip member ``arr_0.npy`` of the file and streams it in batches (``open_npz_array``: a
version 1.0 / 2.0 ``.npy`` header, C order, no objects), casting each batch to float32 and feeding it, NHWC in
[0, 255], to its Inception graph. So the batch written here is:

* ``arr_0``: uint8 ``[N, H, W, 3]``, C order, the images in index order (a genvpt sample set's order: class 0
  first), each converted to RGB and, with ``size``, resized to ``size`` x ``size`` with PIL's bicubic filter (the
  reference batches of the published numbers are 256 x 256 for ImageNet 256, 512 x 512 for ImageNet 512);
* ``arr_1``: int64 ``[N]`` class labels, when the folder is a sample set with a ``record.json`` (guided-diffusion's
  own ``image_sample.py`` writes its class-conditional batches the same way; the evaluator reads only ``arr_0``).

The file is an uncompressed zip (what ``np.savez`` writes) built image by image, so a 50,000-image ImageNet set
(9.8 GB at 256 px) never has to fit in memory, and it appears under its name only when complete
(:func:`genvpt.io.atomic_path`). It loads with ``np.load(path)["arr_0"]`` as well.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

import numpy as np
from PIL import Image

from ..io import atomic_path

__all__ = ["export_adm_npz", "image_source", "ImageSource", "ADM_ARRAY"]

ADM_ARRAY = "arr_0"  # the array the evaluator reads
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageSource(NamedTuple):
    """The images of a sample set or folder: where they are, how many, a reader of (name, file) pairs in order."""
    where: Path
    count: int
    read: Callable[[], Iterator[tuple[str, Any]]]  # each call iterates anew; file = a path or a file object
    labels: Optional[list[int]]


def image_source(sample_dir: str | os.PathLike) -> ImageSource:
    """The images of a sample set (``images.tar`` or ``images/*.png``, and ``record.json``, whose labels come along)
    or of a plain folder of PNG/JPEG images."""
    from ..sampling import IMAGES_SHARD, SampleSet

    d = Path(sample_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"sample folder {d} not found")
    if (d / "record.json").is_file() and ((d / IMAGES_SHARD).is_file() or (d / "images").is_dir()):
        s = SampleSet(d)  # checks the image count against record.json's n
        labels = None
        if s.record.get("labels") is not None:
            labels = [int(x) for x in s.record["labels"]]
            if len(labels) != int(s.record["n"]):
                raise ValueError(f"{d / 'record.json'}: {len(labels)} labels for {s.record['n']} images")
        where = s.images_path
        if int(s.record["n"]) == 0:
            raise ValueError(f"no images in {where}: nothing to export")
        return ImageSource(where, int(s.record["n"]), lambda: ((n, io.BytesIO(b)) for n, b in s.pngs()), labels)
    image_dir = d / "images" if (d / "images").is_dir() else d
    files = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no PNG/JPEG images in {image_dir}: nothing to export")
    return ImageSource(image_dir, len(files), lambda: ((f.name, f) for f in files), None)


def _image_sizes(src: ImageSource) -> tuple[int, int]:
    """The common (width, height) of the images (read from the headers only); an error naming them otherwise."""
    sizes: dict[tuple[int, int], str] = {}
    for name, f in src.read():
        with Image.open(f) as im:
            sizes.setdefault(im.size, name)
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(sizes.items()))
        raise ValueError(f"images of different sizes in {src.where}: {shown}; the ADM batch needs one size")
    return next(iter(sizes))


def _read_rgb(f: Any, size: Optional[int]) -> np.ndarray:
    with Image.open(f) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), resample=Image.BICUBIC)
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> dict:
    return {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}


def export_adm_npz(sample_dir: str | os.PathLike, out_path: str | os.PathLike, *, size: Optional[int] = None) -> dict:
    """Write the images of ``sample_dir`` as an ADM-evaluator batch at ``out_path``; returns a summary dict.

    ``sample_dir``: a sample set (``images.tar`` and ``record.json``, as the sample stage writes under
    ``data/samples/<row>/seed-<s>/``) or any folder of PNG/JPEG files. ``size``: resize every image to
    ``size`` x ``size`` (PIL bicubic); None keeps the images' own size. Images of different sizes, or no images,
    are an error naming the folder.
    """
    if size is not None and int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    src = image_source(sample_dir)
    labels = src.labels
    w, h = _image_sizes(src)
    out_hw = (int(size), int(size)) if size is not None else (h, w)
    shape = (src.count, out_hw[0], out_hw[1], 3)
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".tmp") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open(f"{ADM_ARRAY}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_1_0(fh, _npy_header(shape, np.uint8))
                for name, f in src.read():
                    arr = _read_rgb(f, size)
                    if arr.shape != shape[1:]:  # defensive: a file changed after its size was read
                        raise ValueError(f"{src.where}/{name}: {arr.shape} differs from the batch's {shape[1:]}")
                    fh.write(arr.tobytes())
            if labels is not None:
                with zf.open("arr_1.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asarray(labels, dtype=np.int64))
    return {"path": str(out_path), "images": src.count, "shape": list(shape), "dtype": "uint8",
            "source_size": [h, w], "resized": size is not None and (h, w) != out_hw,
            "labels": labels is not None, "from": str(src.where)}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m genvpt.metrics.adm_export",
        description="Export a sample set as the .npz batch (arr_0: uint8 [N,H,W,3]) of OpenAI's ADM evaluator.")
    ap.add_argument("sample_dir", help="a sample set (data/samples/<row>/seed-<s>) or a folder of PNG/JPEG images")
    ap.add_argument("out", help="output .npz file")
    ap.add_argument("--size", type=int, default=None,
                    help="resize to SIZE x SIZE with PIL bicubic (the reference batch's size: 256 for ImageNet 256)")
    args = ap.parse_args(argv)
    try:
        info = export_adm_npz(args.sample_dir, args.out, size=args.size)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {info['path']}: {ADM_ARRAY} uint8 {tuple(info['shape'])}"
          + (" + arr_1 labels" if info["labels"] else "")
          + (f" (resized from {info['source_size'][0]}x{info['source_size'][1]}, bicubic)" if info["resized"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
