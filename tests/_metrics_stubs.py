"""Small stand-ins for the metrics / report tests: a tiny random CLIP (genvpt.clip.ClipModel around a 2-layer open_clip
model), a tiny class-conditional image sampler, and labelled images a CLIP can tell apart."""
from __future__ import annotations

import torch

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_clip(seed: int = 0):
    """genvpt's ClipModel around a 2-layer, 32-wide open_clip ViT / text transformer (random weights, frozen)."""
    from genvpt.clip import build_clip

    torch.manual_seed(seed)
    return build_clip("genvpt-tiny-vit", model_cfg=TINY_CLIP_CFG).freeze()


class TinySampler:
    """A class-conditional 'generator': a random per-class template plus seeded noise, uint8 [B,3,H,W]."""

    num_classes = 12

    def __init__(self, size: int = 16):
        g = torch.Generator().manual_seed(123)
        self.templates = torch.rand(self.num_classes, 3, size, size, generator=g)

    def sample_images(self, labels, *, seed, batch_size, **kw):
        g = torch.Generator().manual_seed(int(seed))
        base = self.templates[labels.cpu()]
        noise = torch.rand(base.shape, generator=g) * float(kw.get("noise", 0.3))
        return ((base * 0.7 + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def class_images(n_per_class: int, num_classes: int = 4, size: int = 32, seed: int = 0, spread: float = 0.15):
    """Labelled uint8 images: class c = a fixed random colour pattern + noise (what CLIP can tell apart)."""
    g = torch.Generator().manual_seed(seed)
    pat = torch.rand(num_classes, 3, size, size, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = pat[labels] + spread * torch.randn(len(labels), 3, size, size, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


def write_sample_set(directory, images, labels, class_names, *, row: str, kind: str, seed: int,
                     backbone: str = "var", method=None, spread_over=None, train_record=None, trainable_params=None,
                     sample_time_per_image_s: float = 0.01, peak_memory_mb: float = 100.0, texts=None, **extra):
    """A sample set in the seeded layout the score stage reads (``<samples>/<row>/seed-<s>/``): images.tar in
    label order and record.json with the sample stage's fields plus row / kind / backbone / method / seed /
    spread_over / train_record / trainable_params."""
    import json
    from pathlib import Path

    from genvpt.sampling import write_sample_images

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    write_sample_images(d, images)
    labels = [int(x) for x in labels]
    record = {
        "name": row, "n": len(labels), "images_per_class": labels.count(labels[0]), "class_names": list(class_names),
        "labels": labels, "texts": texts, "batch_size": len(labels), "image_shape": list(images.shape[1:]),
        "device": "cpu", "load_time_s": 0.0, "sample_time_s": sample_time_per_image_s * len(labels),
        "sample_time_per_image_s": sample_time_per_image_s, "peak_memory_mb": peak_memory_mb,
        "peak_memory_kind": "process_max_rss", "model_params": 1000,
        "row": row, "kind": kind, "backbone": backbone, "method": method, "seed": seed,
        "spread_over": spread_over or ("sampling_seed" if kind == "frozen" else "training_seed"),
        "train_record": None if train_record is None else str(train_record), "trainable_params": trainable_params,
        **extra,
    }
    (d / "record.json").write_text(json.dumps(record))
    return d


def prepared_target(root, per_split: dict, class_names, size: int = 16, seed: int = 5):
    """A small prepared target dataset (WebDataset shards + classes.json): split -> images per class; class c is
    noise around grey level 80c."""
    import io
    import json
    from pathlib import Path

    from PIL import Image

    from genvpt.datasets.shards import write_split

    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    for split, n in per_split.items():
        samples = []
        for c, name in enumerate(class_names):
            for i in range(n):
                arr = (torch.rand(size, size, 3, generator=g) * 80 + c * 80).to(torch.uint8).numpy()
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG")
                samples.append({"key": f"{split}-{name}-{i:03d}", "png": buf.getvalue(), "label": c,
                                "class_name": name, "caption": f"a {name}", "source_id": f"{split}{c}{i}",
                                "width": size, "height": size})
        write_split(samples, root / split, maxcount=1000)
    (root / "classes.json").write_text(json.dumps(list(class_names)))
    return root


def target_like_images(n_per_class: int, num_classes: int = 3, size: int = 16, seed: int = 0, noise: float = 80.0):
    """uint8 images in label order resembling :func:`prepared_target`'s classes, ``noise`` grey levels wide (a
    'generator' whose quality ``noise`` and ``seed`` set)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = torch.rand(len(labels), 3, size, size, generator=g) * noise + labels.view(-1, 1, 1, 1) * 80.0
    return x.clamp(0, 255).round().to(torch.uint8), labels
