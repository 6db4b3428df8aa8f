"""`DeviceData`: one split's images and pairs, resident on the training device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from siamese.data import PairSet, Split


@dataclass
class DeviceData:
    """Images (N, H, W) and the pairs over them: left/right image indices and labels."""

    images: Tensor
    left: Tensor
    right: Tensor
    labels: Tensor

    @classmethod
    def put(cls, split: Split, pairs: PairSet, device: torch.device) -> DeviceData:
        # Resident on the device for the whole run: no per-batch host-to-device copies.
        def to(array: Any, dtype: torch.dtype) -> Tensor:
            return torch.as_tensor(array, dtype=dtype).to(device)

        return cls(
            to(split.images, torch.float32),
            to(pairs.left, torch.long),
            to(pairs.right, torch.long),
            to(pairs.labels, torch.float32),
        )

    @property
    def device(self) -> torch.device:
        return self.images.device

    def first(self, limit: int | None) -> DeviceData:
        """The first `limit` pairs (all where None), over the same images."""
        if limit is None:
            return self
        return DeviceData(self.images, self.left[:limit], self.right[:limit], self.labels[:limit])
