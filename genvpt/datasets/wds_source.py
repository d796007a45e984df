"""``webdataset``: existing WebDataset shards (a folder of .tar files or a brace pattern).

Each sample needs an image (jpg/jpeg/png/webp) and a label (``cls``, or ``json["label"]``); a caption is taken from
``txt`` or ``json["caption"]``. Class names come from ``dataset.class_names`` or the samples' ``json["class_name"]``.
Shards whose file name starts with ``train`` / ``val`` / ``validation`` / ``test``, or that lie in a ``train/``,
``val/`` or ``test/`` folder under ``dataset.path`` (a prepared folder's layout), fix the split; the splits no shard
ships are carved from the train shards (or from all when none is named). Local shards are checked first
(:func:`~genvpt.datasets.shards.scan_shard`): a member with an absolute path or ``..``, a link or a device member
is refused with the shard and member named.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from .params import SPLIT_DIRS, DatasetParams
from .base import BadImage, Record, Reject, open_image
from .registry import Item, register_dataset
from .shards import scan_shard

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def _split_of(url: str, root: Path | None) -> str | None:
    """train / val / test from the shard's file name, else from its folder under ``root``."""
    name = Path(url).name.lower()
    for prefix, split in (("train", "train"), ("val", "val"), ("test", "test")):  # "val" covers "validation"
        if name.startswith(prefix):
            return split
    if root is not None:
        parts = Path(url).relative_to(root).parts[:-1]
        named = [SPLIT_DIRS[d] for d in parts if d in SPLIT_DIRS]
        if named:
            return named[-1]
    return None


class WebDatasetSource:
    def __init__(self, p: DatasetParams):
        import braceexpand
        import webdataset as wds

        root = Path(p.path)
        urls = [str(u) for u in sorted(root.rglob("*.tar"))] if root.is_dir() else list(braceexpand.braceexpand(p.path))
        if not urls:
            raise FileNotFoundError(f"dataset.path: no .tar shards at {p.path}")
        self.image_size = p.image_size
        self.samples = []
        names_seen: dict[int, str] = {}
        for url in urls:
            split = _split_of(url, root if root.is_dir() else None)
            if Path(url).is_file():
                scan_shard(url)  # ShardError naming the shard and the unsafe member
            try:
                for s in wds.WebDataset(url, shardshuffle=False, empty_check=False):
                    meta = json.loads(s["json"]) if "json" in s else {}
                    label = int(s["cls"]) if "cls" in s else meta.get("label")
                    img = next((s[k] for k in IMAGE_KEYS if k in s), None)
                    cap = s["txt"].decode() if "txt" in s else meta.get("caption")
                    sid = f"{Path(url).name}/{s['__key__']}"
                    if "class_name" in meta and label is not None:
                        names_seen[int(label)] = meta["class_name"]
                    self.samples.append((sid, split, img, label, cap))
            except Exception as err:
                raise ValueError(f"cannot read shard {url}: {type(err).__name__}: {err}") from err
        labels = [int(s[3]) for s in self.samples if s[3] is not None]
        n = max(labels) + 1 if labels else 0
        self.class_names = list(p.class_names) if p.class_names else [names_seen.get(i, str(i)) for i in range(n)]

    def _load(self, sid, raw, label, cap):
        if not raw:
            return Reject(sid, "empty image (0 bytes)")
        try:
            img = open_image(io.BytesIO(raw), self.image_size)
        except BadImage as err:
            return Reject(sid, f"unreadable image bytes: {err}")
        return Record(img, label, self.class_names[label], cap, sid)

    def items(self):
        for sid, split, raw, label, cap in self.samples:
            if raw is None:
                yield Reject(sid, f"sample has no image (looked for {', '.join(IMAGE_KEYS)})")
            elif label is None or not 0 <= int(label) < len(self.class_names):
                yield Reject(sid, f"sample has no valid label (got {label!r})")
            else:
                yield Item(sid, int(label), lambda s=sid, r=raw, l=int(label), c=cap: self._load(s, r, l, c), split)


@register_dataset("webdataset")
def _webdataset(p: DatasetParams):
    return WebDatasetSource(p)
