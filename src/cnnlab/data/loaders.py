"""Batches from decoded uint8 tensors: seeded shuffling per epoch, normalisation on the device."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch


class TensorBatches:
    """An iterable of (inputs, labels) batches over a subset of an in-memory image tensor.

    The order of epoch ``e`` depends only on (seed, e), so a resumed run sees exactly the
    batches an uninterrupted one would. Images stay uint8 until they reach the device.

    Args:
        images: (N, C, H, W) uint8.
        labels: (N,) int64.
        indices: which images belong to this loader.
        batch_size: images per batch (the last batch may be smaller).
        mean, std: per-channel normalisation on the 0..1 scale.
        shuffle: reshuffle every epoch.
        seed: base seed of the shuffle.
        device: where batches are delivered.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray | Sequence[int],
                 batch_size: int, mean: Sequence[float], std: Sequence[float], shuffle: bool = False,
                 seed: int = 0, device: torch.device | str = "cpu"):
        self.images = images
        self.labels = labels
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.device = torch.device(device)
        shape = (1, -1, 1, 1)
        self._scale = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(shape).to(self.device)
        self._shift = (torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)
                       ).view(shape).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size

    def order(self) -> torch.Tensor:
        """The image indices of this epoch, in batch order."""
        if not self.shuffle:
            return self.indices
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return self.indices[torch.randperm(len(self.indices), generator=g)]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) on any device → normalised float32 on this loader's device."""
        x = x.to(self.device, non_blocking=True).float()
        return x * self._scale - self._shift

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.normalize(self.images[idx]), self.labels[idx].to(self.device, non_blocking=True)
