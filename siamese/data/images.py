"""`ImageSet`: what every source loader returns and the checks, splits and pairs read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageSet:
    """Images (N, 40, 50) float32, class labels (N,), and where each image came from."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    origins: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])
