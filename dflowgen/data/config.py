"""The ``[generate]`` section: how a dataset is produced and stored (not what is rendered)."""

from __future__ import annotations

import dataclasses
import typing

from dflowgen.fields import check_positive


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """How a dataset is produced and stored (not what is rendered); keys under ``[generate]``.

    mode: ``random`` renders θ as drawn from the ``[render]`` ranges; ``dflow`` first
    optimises every sample against the proxies of ``[optimize]`` [DFlow].
    seed: the run seed; sample i is drawn from (seed, i) alone. batch_size: samples
    rendered (and optimised) at once. shard_size: samples per HDF5 shard.
    flow_dtype: precision of the stored flow. preview_count: samples ``--preview`` draws.
    store_params: keep every sample's scene parameters θ in its shard, so it can be
    re-rendered or optimised further; the per-pixel texture noise in θ takes 24 bytes a
    pixel, more than the images and flow together, and a randomly generated sample can
    also be re-drawn from the recipe, seed and index.
    """

    mode: typing.Literal["random", "dflow"] = "random"
    seed: int = 0
    batch_size: int = 8
    shard_size: int = 256
    flow_dtype: typing.Literal["float32", "float16"] = "float32"
    preview_count: int = 8
    store_params: bool = True

    def __post_init__(self) -> None:
        check_positive(self, "batch_size", "shard_size")
        if self.preview_count < 0:
            raise ValueError(f"preview_count must not be negative, got {self.preview_count}")
