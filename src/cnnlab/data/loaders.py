"""Batches from decoded uint8 images: seeded order per epoch, augmentation, normalisation on the device."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from cnnlab.core.errors import CnnlabError
from cnnlab.data import shards
from cnnlab.data.transforms import per_image_standardize

if TYPE_CHECKING:
    from cnnlab.data.pipeline import PreparedData

BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights that make every class equally likely to be drawn.

    Multi-label samples take the weight of their rarest label.
    """
    if labels.dim() == 1:
        counts = torch.bincount(labels).double().clamp_min(1)
        return 1.0 / counts[labels]
    counts = labels.double().sum(0).clamp_min(1)
    inv = labels.double() / counts
    return inv.max(1).values.clamp_min(1.0 / len(labels))


class TensorBatches:
    """An iterable of (inputs, labels) batches over a subset of a uint8 image store.

    The order of epoch ``e`` depends only on (seed, e), so a resumed run sees exactly the
    batches an uninterrupted one would. Images stay uint8 until they reach the device.

    Args:
        images: (N, C, H, W) uint8 tensor or anything indexable by an index tensor like one.
        labels: (N,) int64 or (N, K) multi-hot.
        indices: which images belong to this loader.
        batch_size: images per batch (the last batch may be smaller).
        mean, std: per-channel normalisation on the 0..1 scale (``normalize="mean-std"``).
        shuffle: reshuffle every epoch.
        seed: base seed of the order.
        device: where batches are delivered.
        transform: per-image augmentation on uint8 (C, H, W) tensors (training only).
        normalize: "mean-std", "per-image" (standardise each image), "none" (/255), or
            "features" for float feature vectors that are used as they are.
        sampler: "random" (a permutation) or "balanced" (class-balanced, with replacement).
        batch_transform: applied to each normalised batch, e.g. mixup or random erasing.
        channels_last: deliver batches in the channels-last memory format (conv nets on CPU).
        drop_single: leave out a last batch of a single image (models with BatchNorm).
        rank, world: under torchrun, the share of each (global) batch this process trains on:
            every rank draws the same order and takes images rank, rank + world, …

    On the CPU, batches are written into two alternating preallocated buffers: a fresh
    float tensor per batch costs more in page faults than the conversion itself (measured
    in benchmarks/cache_vs_imagefolder.py). A batch stays valid while the next one is made,
    which is all a training or evaluation loop needs; ``list(loader)`` would alias them, so
    pass ``reuse_buffers=False`` to keep batches.
    """

    def __init__(
        self,
        images,
        labels: torch.Tensor,
        indices: np.ndarray | Sequence[int],
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        transform: Callable | None = None,
        normalize: str = "mean-std",
        sampler: str = "random",
        batch_transform: BatchTransform | None = None,
        channels_last: bool = False,
        reuse_buffers: bool = True,
        drop_single: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
        self.images = images
        self.rank, self.world = rank, world  # torchrun: this rank takes every world-th image of each batch
        self.drop_single = drop_single  # BatchNorm cannot train on a batch of one
        self.labels = labels
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.device = torch.device(device)
        self.transform = transform
        self.normalize_mode = normalize
        self.sampler = sampler
        self.batch_transform = batch_transform
        self.channels_last = channels_last
        self.reuse_buffers = reuse_buffers and self.device.type == "cpu"
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._turn = 0
        # numpy gathers from (memory-mapped) arrays several times faster than tensor indexing
        self._array = images.numpy() if isinstance(images, torch.Tensor) and images.device.type == "cpu" else None
        self._weights = balanced_weights(labels[self.indices]) if sampler == "balanced" else None
        shape = (1, -1, 1, 1)
        if normalize == "mean-std":
            std_t = torch.tensor(std, dtype=torch.float32)
            self._scale = (1.0 / (255.0 * std_t)).view(shape).to(self.device)
            self._shift = (torch.tensor(mean, dtype=torch.float32) / std_t).view(shape).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size + (n % self.batch_size > (1 if self.drop_single and n > 1 else 0))

    def order(self) -> torch.Tensor:
        """The image indices of this epoch, in batch order."""
        if not self.shuffle:
            return self.indices
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self._weights is not None:
            pick = torch.multinomial(self._weights, len(self.indices), replacement=True, generator=g)
            return self.indices[pick]
        return self.indices[torch.randperm(len(self.indices), generator=g)]

    def _float_like(self, u: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last and u.dim() == 4 else torch.contiguous_format
        if not self.reuse_buffers:
            return torch.empty(u.shape, dtype=torch.float32, device=self.device, memory_format=fmt)
        self._turn ^= 1
        buf = self._buffers[self._turn]
        if buf is None or buf.shape[1:] != u.shape[1:] or buf.shape[0] < u.shape[0]:
            shape = (max(u.shape[0], self.batch_size), *u.shape[1:])
            buf = torch.empty(shape, dtype=torch.float32, device=self.device, memory_format=fmt)
            self._buffers[self._turn] = buf
        return buf[: u.shape[0]]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) on any device → normalised float32 on this loader's device."""
        if self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory()  # so that the copy below overlaps with the GPU's work
        u = x.to(self.device, non_blocking=True)
        if self.normalize_mode == "features":
            return u
        out = self._float_like(u)
        out.copy_(u)
        if self.normalize_mode == "mean-std":
            return out.mul_(self._scale).sub_(self._shift)
        out.div_(255.0)
        return per_image_standardize(out) if self.normalize_mode == "per-image" else out

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images at ``idx``."""
        if self._array is not None:
            return torch.from_numpy(self._array[idx.numpy()])
        return self.images[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        if self.drop_single and len(order) % self.batch_size == 1 and len(order) > 1:
            order = order[:-1]  # a last batch of one image would break BatchNorm's batch statistics
        for start in range(0, len(order), self.batch_size):
            # sorted within the batch: reads memory-mapped pixels in file order; the set of
            # images in each batch, which is all the maths depends on, is unchanged
            idx = order[start : start + self.batch_size].sort().values
            if self.world > 1:
                if len(idx) < self.world:  # every rank skips it alike (each knows the global order)
                    continue
                idx = idx[self.rank :: self.world]
            yield self.finish(self.gather(idx), self.labels[idx])

    def finish(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and their labels → the batch a model trains on: per-image augmentation,
        normalisation on the loader's device, batch-level augmentation."""
        if self.transform is not None:
            # one image at a time: v2 transforms draw one set of parameters per call
            x = torch.stack([self.transform(img) for img in x])
        x = self.normalize(x)
        y = y.to(self.device, non_blocking=True)
        if self.batch_transform is not None:
            x, y = self.batch_transform(x, y)
        return x, y


def make_batches(
    images: Any,
    labels: torch.Tensor,
    indices: Any,
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    workers: int = 2,
    **kwargs: Any,
) -> TensorBatches:
    """Batches of ``images[indices]``: from memory (:class:`TensorBatches`) or streamed from shards
    (:class:`~cnnlab.data.shards.ShardBatches`) when the images are a shard folder's."""

    if isinstance(images, shards.ShardImages):
        if images.whole_split(indices) is not None:
            return ShardBatches(images, labels, indices, batch_size, mean, std, workers=workers, **kwargs)
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) > 4096:
            images.split_of(idx)  # raises: a large part of a split is streamed whole or not at all
        # a few images (a report's examples): read from their shards, then batched from memory
        return TensorBatches(
            images[idx], labels[torch.from_numpy(idx)], np.arange(len(idx)), batch_size, mean, std, **kwargs
        )
    return TensorBatches(images, labels, indices, batch_size, mean, std, **kwargs)


class ShardBatches(TensorBatches):
    """Batches streamed from one split's shards; the same interface, normalisation and augmentation
    as :class:`~cnnlab.data.loaders.TensorBatches`.

    Training (``shuffle``): the split's shards in a (seed, epoch) order, under torchrun dealt out
    rank by rank (each rank reads only its own), read by ``workers`` processes that each decode and
    shuffle their samples through a buffer of ``buffer`` samples. Every rank runs the same number of
    steps. Evaluation: one reading process, shard order, so results line up with the split.
    """

    def __init__(
        self,
        images: shards.ShardImages,
        labels: torch.Tensor,
        indices: Any,
        batch_size: int,
        *args: Any,
        workers: int = 2,
        buffer: int = 4096,
        **kwargs: Any,
    ):
        if kwargs.get("sampler", "random") != "random":
            raise CnnlabError(
                "data.sampler 'balanced' needs random access; with sharded data use train.class_weights auto instead"
            )
        super().__init__(images, labels, indices, batch_size, *args, **kwargs)
        self.split = images.split_of(self.indices)
        self.workers, self.buffer = workers, buffer

    def _shards(self) -> list[list[tuple[str, int]]]:
        """The shards each rank reads this epoch."""
        shards = self.images.urls(self.split)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(shards)
        if self.world > 1 and len(shards) < self.world:
            raise CnnlabError(
                f"the {self.split} split has {len(shards)} shard(s) for {self.world} ranks; write "
                f"smaller shards (cnnlab data shard --shard-size) so that each rank has one"
            )
        return [shards[r :: self.world] for r in range(self.world)] if self.world > 1 else [shards]

    def _local_batch(self) -> int:
        return max(1, self.batch_size // self.world) if self.world > 1 else self.batch_size

    def __len__(self) -> int:
        if self.world > 1:
            per_rank = [sum(c for _, c in s) for s in self._shards()]
            return max(0, min(per_rank) // self._local_batch())
        n = len(self.indices)
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        mine = self._shards()[self.rank if self.world > 1 else 0]
        if not mine:
            return
        local = self._local_batch()
        workers = min(self.workers, len(mine)) if self.shuffle else min(1, self.workers)
        seed = self.seed * 1_000_003 + self.epoch if self.shuffle else None
        shape = cast(tuple[int, int, int], tuple(self.images.shape[1:]))
        ds = shards.ShardStream(mine, shape, len(self.images.index["classes"]), local, seed, self.buffer)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=workers, persistent_workers=False, prefetch_factor=4 if workers else None
        )
        steps = len(self) if self.world > 1 else None
        batches = iter(loader)
        n = 0
        while steps is None or n < steps:  # every rank stops at the same step
            try:
                x, y = next(batches)
            except StopIteration:
                break
            except CnnlabError:
                raise
            except Exception as e:  # a damaged shard, raised in a reading process
                raise shards.as_one_line(e, self.split) from None
            n += 1
            if self.drop_single and len(y) == 1 and self.shuffle:
                continue  # BatchNorm cannot train on one image
            yield self.finish(x, y)


def split_loader(data: PreparedData, split: str, batch_size: int, device: torch.device, **kwargs: Any) -> TensorBatches:
    """Batches of one split of ``data``, normalised as the data says (kwargs: shuffle, transforms...)."""
    return make_batches(
        data.images,
        data.labels,
        data.splits[split],
        batch_size,
        data.mean,
        data.std,
        device=device,
        normalize=data.normalize,
        **kwargs,
    )
