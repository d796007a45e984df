"""Class accuracy of samples under a linear probe: logistic regression on CLIP image embeddings of real images."""
from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["LinearProbe"]


class LinearProbe:
    """``sklearn.linear_model.LogisticRegression`` on (normalised) features; deterministic (lbfgs)."""

    def __init__(self, c: float = 1.0, max_iter: int = 1000):
        from sklearn.linear_model import LogisticRegression

        self.clf = LogisticRegression(C=c, max_iter=max_iter)

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> "LinearProbe":
        y = np.asarray(labels.cpu().numpy())
        if len(np.unique(y)) < 2:
            raise ValueError("the linear probe needs real images of at least two classes")
        self.clf.fit(features.double().cpu().numpy(), y)
        return self

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.clf.predict(features.double().cpu().numpy())).long()

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(features) == labels.cpu().long()).double().mean())
