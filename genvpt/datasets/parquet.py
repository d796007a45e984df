"""``parquet``: image bytes + label columns, as Hugging Face ``datasets`` exports them.

``dataset.path`` is a .parquet file or a folder of them (searched recursively). The image column may hold raw
bytes or HF's ``{"bytes", "path"}`` struct. Class names come from ``dataset.class_names``, else from HF's
ClassLabel metadata in the schema, else from the sorted distinct labels. Files whose name starts with
``train`` / ``val`` / ``validation`` / ``test`` fix the split; the splits no file ships are carved from the train
files (or from all files when none is named) by ``val_fraction`` / ``test_fraction``.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .params import DatasetParams
from .base import Record, Reject, fit_square, to_rgb
from .registry import Item, register_dataset


def _split_of(path: Path) -> str | None:
    n = path.name.lower()
    if n.startswith("train"):
        return "train"
    if n.startswith(("val", "validation")):
        return "val"
    if n.startswith("test"):
        return "test"
    return None


def _hf_class_names(schema, column: str) -> list[str] | None:
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return None
    try:
        feats = json.loads(meta)["info"]["features"]
        names = feats[column].get("names")
        return list(names) if names else None
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


class ParquetDataset:
    def __init__(self, p: DatasetParams):
        import pyarrow.parquet as pq

        root = Path(p.path)
        files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"dataset.path: no .parquet files at {root}")
        self.image_size = p.image_size
        cols = [p.image_column, p.label_column] + ([p.caption_column] if p.caption_column else [])
        self.rows: list[tuple[str, str | None, object, object, str | None]] = []
        names = list(p.class_names) if p.class_names else None
        raw_labels = []
        for f in files:
            pf = pq.ParquetFile(f)
            missing = [c for c in cols if c not in pf.schema_arrow.names]
            if missing:
                raise KeyError(f"{f}: missing column(s) {missing}; columns are {pf.schema_arrow.names} "
                               f"(set dataset.image_column / label_column / caption_column)")
            names = names or _hf_class_names(pf.schema_arrow, p.label_column)
            table = pf.read(columns=cols)
            images = table.column(p.image_column).to_pylist()
            labels = table.column(p.label_column).to_pylist()
            caps = table.column(p.caption_column).to_pylist() if p.caption_column else [None] * len(labels)
            for i, (im, lab, cap) in enumerate(zip(images, labels, caps)):
                self.rows.append((f"{f.name}/{i}", _split_of(f), im, lab, cap))
                raw_labels.append(lab)
        if names is None:
            distinct = sorted(set(raw_labels), key=lambda v: (isinstance(v, str), v))
            names = [str(v) for v in distinct]
            self._index = {v: i for i, v in enumerate(distinct)}
        elif raw_labels and isinstance(raw_labels[0], str):
            self._index = {n: i for i, n in enumerate(names)}
        else:
            self._index = None
        self.class_names = names

    def _label(self, lab) -> int | None:
        if self._index is not None:
            return self._index.get(lab)
        lab = int(lab)
        return lab if 0 <= lab < len(self.class_names) else None

    def _load(self, sid: str, data, label: int, caption) -> Record | Reject:
        raw = data.get("bytes") if isinstance(data, dict) else data
        if not raw:
            return Reject(sid, "no image bytes in row")
        try:
            with Image.open(io.BytesIO(raw)) as im:
                im.load()
                img = fit_square(to_rgb(im), self.image_size)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            return Reject(sid, f"unreadable image bytes: {err}")
        return Record(img, label, self.class_names[label], caption, sid)

    def items(self):
        for sid, split, data, lab, cap in self.rows:
            label = self._label(lab)
            if label is None:
                yield Reject(sid, f"label {lab!r} not among {len(self.class_names)} class names")
                continue
            yield Item(sid, label, lambda s=sid, d=data, l=label, c=cap: self._load(s, d, l, c), split)


@register_dataset("parquet")
def _parquet(p: DatasetParams):
    return ParquetDataset(p)
