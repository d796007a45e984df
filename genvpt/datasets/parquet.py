"""``parquet``: image bytes + label columns, as Hugging Face ``datasets`` exports them.

``dataset.path`` is a .parquet file or a folder of them (searched recursively). The image column may hold raw
bytes or HF's ``{"bytes", "path"}`` struct. Class names come from ``dataset.class_names``, else from HF's
ClassLabel metadata in the schema, else from the sorted distinct labels. Files whose name starts with
``train`` / ``val`` / ``validation`` / ``test`` fix the split; the splits no file ships are carved from the train
files (or from all files when none is named) by ``val_fraction`` / ``test_fraction``.

Every file's schema is checked before it is read: a missing column (KeyError) or a column of the wrong type
(TypeError) names the file, the column and what is expected. Rows whose image is empty, not an image, truncated or a
decompression bomb, or whose label is null or unknown, are rejects (rejects.parquet), not errors.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from .params import DatasetParams
from .base import BadImage, Record, Reject, open_image
from .registry import Item, register_dataset


def _is_binary(t) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or (
        hasattr(pa.types, "is_binary_view") and pa.types.is_binary_view(t))


def _is_string(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))


def _check_types(path: Path, schema, p: DatasetParams) -> None:
    """TypeError naming ``path``, the column and what it should hold, for a column of the wrong type."""
    import pyarrow as pa

    def bad(col: str, setting: str, expected: str):
        return TypeError(f"{path}: column {col!r} (dataset.{setting}) has type {schema.field(col).type}; expected "
                         f"{expected}")

    t = schema.field(p.image_column).type
    if pa.types.is_struct(t):
        idx = t.get_field_index("bytes")
        if idx < 0 or not _is_binary(t.field(idx).type):
            raise bad(p.image_column, "image_column", "binary image bytes, or a struct with a binary 'bytes' field "
                      "(Hugging Face Image)")
    elif not _is_binary(t):
        raise bad(p.image_column, "image_column", "binary image bytes, or a struct with a binary 'bytes' field "
                  "(Hugging Face Image)")
    t = schema.field(p.label_column).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (pa.types.is_integer(t) or _is_string(t)):
        raise bad(p.label_column, "label_column", "integer or string labels")
    if p.caption_column:
        t = schema.field(p.caption_column).type
        if not (_is_string(t) or pa.types.is_null(t)):
            raise bad(p.caption_column, "caption_column", "string captions")


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
            try:
                pf = pq.ParquetFile(f)
            except Exception as err:  # ArrowInvalid: not parquet / corrupt footer; OSError
                raise ValueError(f"{f}: not a readable parquet file ({type(err).__name__}: {err})") from err
            missing = [c for c in cols if c not in pf.schema_arrow.names]
            if missing:
                raise KeyError(f"{f}: missing column(s) {missing}; columns are {pf.schema_arrow.names} "
                               f"(set dataset.image_column / label_column / caption_column)")
            _check_types(f, pf.schema_arrow, p)
            names = names or _hf_class_names(pf.schema_arrow, p.label_column)
            try:
                table = pf.read(columns=cols)
            except Exception as err:  # ArrowInvalid / OSError: corrupt column chunks
                raise ValueError(f"{f}: cannot read columns {cols} ({type(err).__name__}: {err})") from err
            images = table.column(p.image_column).to_pylist()
            labels = table.column(p.label_column).to_pylist()
            caps = table.column(p.caption_column).to_pylist() if p.caption_column else [None] * len(labels)
            for i, (im, lab, cap) in enumerate(zip(images, labels, caps)):
                self.rows.append((f"{f.name}/{i}", _split_of(f), im, lab, cap))
                if lab is not None:
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
        if lab is None:
            return None
        if self._index is not None:
            return self._index.get(lab)
        lab = int(lab)
        return lab if 0 <= lab < len(self.class_names) else None

    def _load(self, sid: str, data, label: int, caption) -> Record | Reject:
        raw = data.get("bytes") if isinstance(data, dict) else data
        if not raw:
            return Reject(sid, "no image bytes in row")
        try:
            img = open_image(io.BytesIO(raw), self.image_size)
        except BadImage as err:
            return Reject(sid, f"unreadable image bytes: {err}")
        return Record(img, label, self.class_names[label], caption, sid)

    def items(self):
        for sid, split, data, lab, cap in self.rows:
            label = self._label(lab)
            if lab is None:
                yield Reject(sid, "no label (null)")
                continue
            if label is None:
                yield Reject(sid, f"label {lab!r} not among {len(self.class_names)} class names")
                continue
            yield Item(sid, label, lambda s=sid, d=data, l=label, c=cap: self._load(s, d, l, c), split)


@register_dataset("parquet")
def _parquet(p: DatasetParams):
    return ParquetDataset(p)
