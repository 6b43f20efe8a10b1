"""Training data as a pure function of (seed, step): the weighted mix, its order and its augmentation.

The mix is one long *stream*: epoch after epoch of the concatenated sources (each repeated
by its weight, like the official ``100 * sintel_clean + things``), every epoch a fresh
permutation drawn from ``(seed, epoch)``. Step ``s`` takes stream positions
``[s·B, (s+1)·B)`` for the global batch ``B`` (split between processes in contiguous
slices), and the pair at stream position ``k`` is augmented with a generator seeded from
``(seed, k)``, i.e. from (seed, epoch, position in epoch). So the batch of any step can be
re-made alone, by any DataLoader worker or process, and a resumed run sees exactly the
data an uninterrupted run would have seen.
"""

from __future__ import annotations

import bisect
import dataclasses
from contextlib import contextmanager
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dflowgen.data.augment import FlowAugmentor
from dflowgen.errors import DflowgenError, option
from dflowgen.seeding import sample_generator, sample_seed
from dflowgen.train.config import AugmentConfig


@dataclass(frozen=True)
class DataSource:
    """One training source: a Dataset of FlowPair, its repeat weight, and whether its flow is sparse."""

    dataset: Dataset
    weight: int = 1
    sparse: bool = False
    name: str = ""

    def describe(self) -> dict[str, object]:
        """What a checkpoint records to check that a resumed run sees the same data."""
        return {"name": self.name, "size": len(self.dataset), "weight": self.weight, "sparse": self.sparse}


def make_augmentor(crop_size: tuple[int, int], augment: AugmentConfig, sparse: bool) -> FlowAugmentor:
    """The FlowAugmentor for one source (sparse sources get KITTI-style sparse resizing)."""
    return FlowAugmentor(
        crop_size=crop_size,
        min_scale=augment.min_scale,
        max_scale=augment.max_scale,
        do_flip=augment.do_flip,
        sparse=sparse,
        photometric=augment.photometric,
        eraser=augment.eraser,
        spatial_prob=augment.spatial_prob,
        stretch_prob=augment.stretch_prob,
        max_stretch=augment.max_stretch,
    )


class TrainingMix(Dataset):
    """The weighted concatenation of sources, augmented and cropped.

    Items are addressed by ``(stream_position, index)``: ``index`` picks the pair in the
    concatenation (``len`` = Σ size·weight) and ``stream_position`` seeds its augmentation.
    An item is a dict ``img1``, ``img2`` (3×H×W float in [0, 255]), ``flow`` (2×H×W),
    ``valid`` (H×W float 0/1) at the crop size.

    ``unlabelled`` mixes frames without ground truth (the label-free modes): their flow is
    zero and valid all 0, and only the geometric part of ``augment`` is applied, so the
    photometric losses see the frames' own colours.
    """

    def __init__(self, sources: Sequence[DataSource], crop_size: tuple[int, int], augment: AugmentConfig,
                 seed: int, unlabelled: bool = False) -> None:
        if not sources:
            named = option("frames", "SPEC") if unlabelled else option("sources", "SPEC", flag="--data")
            raise DflowgenError(f"no training data: give at least one {named}")
        if unlabelled:
            augment = dataclasses.replace(augment, photometric=False, eraser=False)
        for source in sources:
            if source.weight < 1:
                raise DflowgenError(f"data source {source.name or '?'}: repeat weight must be >= 1, got {source.weight}")
            if len(source.dataset) == 0:
                raise DflowgenError(f"data source {source.name or '?'} has no pairs")
        self.datasets = [source.dataset for source in sources]
        self.augmentors = [make_augmentor(crop_size, augment, source.sparse) for source in sources]
        self.offsets = np.cumsum([0] + [len(source.dataset) * source.weight for source in sources]).tolist()
        self.seed = seed
        self.unlabelled = unlabelled

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(source number, index inside that source's dataset) of concatenation index ``index``."""
        part = bisect.bisect_right(self.offsets, index) - 1
        return part, (index - self.offsets[part]) % len(self.datasets[part])

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        stream_position, index = item
        part, local = self.locate(index)
        pair = self.datasets[part][local]
        if self.unlabelled:
            pair = pair._replace(flow=None, valid=None)
        elif pair.flow is None:
            raise DflowgenError(f"training pair {pair.name!r} has no ground-truth flow (unlabelled data are for "
                                f"{option('frames')} with {option('mode')} self-supervised, pseudo-label or distill)")
        generator = np.random.default_rng(sample_seed(self.seed, stream_position, "augment"))
        with single_thread():
            return self.augmentors[part](pair, generator)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one thread inside the block.

    Parallel reductions (the mean in contrast jitter, ...) round differently with different
    thread counts; DataLoader workers run on one thread, so the main process must too for a
    sample to come out bit-identical wherever it is made.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def epoch_permutation(seed: int, epoch: int, num_items: int) -> torch.Tensor:
    """The order of the concatenation in epoch ``epoch``: a permutation of ``range(num_items)``."""
    return torch.randperm(num_items, generator=sample_generator(seed, epoch, "order"))


class StepBatches(Sampler[list[tuple[int, int]]]):
    """This process's batches of ``(stream_position, index)`` for steps ``start_step … num_steps − 1``.

    Every process computes the same global batch of ``batch_size`` positions per step and
    takes its own contiguous slice of ``batch_size / world_size`` (a deterministic
    DistributedSampler). The state is just (seed, step), so resuming needs nothing else.
    """

    def __init__(self, num_items: int, seed: int, batch_size: int, start_step: int, num_steps: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise DflowgenError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.num_items, self.seed, self.batch_size = num_items, seed, batch_size
        self.start_step, self.num_steps = start_step, num_steps
        self.local_batch = batch_size // world_size
        self.offset = rank * self.local_batch
        self._permutations: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._permutations:
            # A batch spans at most a few epochs; keep only the ones still ahead.
            self._permutations = {e: p for e, p in self._permutations.items() if e > epoch - 2}
            self._permutations[epoch] = epoch_permutation(self.seed, epoch, self.num_items)
        return self._permutations[epoch]

    def positions(self, step: int) -> list[int]:
        """Stream positions of this process's share of step ``step``."""
        first = step * self.batch_size + self.offset
        return list(range(first, first + self.local_batch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.num_steps):
            batch = []
            for position in self.positions(step):
                epoch, within = divmod(position, self.num_items)
                batch.append((position, int(self._permutation(epoch)[within])))
            yield batch
