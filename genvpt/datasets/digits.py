"""``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes), upsampled to RGB."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .params import DatasetParams
from .base import Record
from .registry import Item, register_dataset

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class DigitsDataset:
    def __init__(self, image_size: int = 32):
        from sklearn.datasets import load_digits

        d = load_digits()
        # 0..16 ink -> white digit on black, like MNIST
        self.images = (d.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
        self.labels = d.target.astype(int)
        self.image_size = image_size
        self.class_names = list(CLASS_NAMES)

    def make(self, i: int) -> Record:
        img = Image.fromarray(self.images[i], "L").resize((self.image_size, self.image_size), Image.BICUBIC)
        return Record(img.convert("RGB"), int(self.labels[i]), CLASS_NAMES[self.labels[i]], None, f"digits/{i}")

    def items(self):
        for i in range(len(self.labels)):
            yield Item(f"digits/{i}", int(self.labels[i]), lambda i=i: self.make(i))


@register_dataset("digits")
def _digits(p: DatasetParams):
    return DigitsDataset(p.image_size)
