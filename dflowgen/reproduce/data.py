"""The data of a reproduction: where it lives, the Sintel scene split, and Sintel at the render scale."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from dflowgen.data.scaled import ScaledPairs
from dflowgen.data.spec import open_spec
from dflowgen.errors import DflowgenError
from dflowgen.recipes.reproduce import ReproduceConfig
from dflowgen.weights import resolve_weights

# ../shared/data beside the repository, as the tests' ``shared_data`` fixture finds it.
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def data_root(config: ReproduceConfig) -> Path:
    """``config.data_root``, else ``$DFLOWGEN_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    text = config.data_root or os.environ.get("DFLOWGEN_SHARED_DATA", "")
    root = Path(text).expanduser() if text else DEFAULT_DATA_ROOT
    if not root.is_dir():
        source = ("reproduce.data_root" if config.data_root else
                  "$DFLOWGEN_SHARED_DATA" if text else "the default beside the repository")
        raise DflowgenError(f"data root {root} not found ({source}); set reproduce.data_root in the recipe "
                            "or DFLOWGEN_SHARED_DATA to the folder holding the Sintel copy")
    return root


def find_weights(name: str, root: Path) -> Path:
    """A checkpoint named in a recipe: a file, a weights-store or packaged name, else a path under ``root``."""
    try:
        return resolve_weights(name)
    except DflowgenError as error:
        under_root = root / name
        if under_root.is_file():
            return under_root
        raise DflowgenError(f"{error}; nor is it a file under the data root {root}") from None


@dataclass(frozen=True)
class SintelSplit:
    """The labelled Sintel pairs of a reproduction, split by scene: what the target proxy learns, what is held out.

    Both are data specs (``sintel:ROOT:both:scenes=...``), opened when built, so an unknown
    scene fails before any work; ``scale`` is the factor every frame is resized by.
    """

    proxy_spec: str
    eval_spec: str
    scale: float
    proxy: Dataset
    held_out: Dataset

    @classmethod
    def from_config(cls, config: ReproduceConfig, root: Path) -> SintelSplit:
        folder = Path(config.sintel).expanduser()
        folder = folder if folder.is_absolute() else root / folder
        if not folder.is_dir():
            raise DflowgenError(f"Sintel folder {folder} not found (reproduce.sintel = {config.sintel!r}, "
                                f"relative to the data root {root})")
        proxy_spec = f"sintel:{folder}:both:scenes={','.join(config.proxy_scenes)}"
        eval_spec = f"sintel:{folder}:both:scenes={','.join(config.eval_scenes)}"
        proxy = ScaledPairs(open_spec(proxy_spec).dataset, config.sintel_scale)
        held_out = ScaledPairs(open_spec(eval_spec).dataset, config.sintel_scale)
        return cls(proxy_spec, eval_spec, config.sintel_scale, proxy, held_out)


def flow_magnitudes(dataset: Dataset) -> np.ndarray:
    """The flow magnitude (px) of every valid pixel of every pair of ``dataset``, as one flat float32 array."""
    magnitudes = []
    for index in range(len(dataset)):
        pair = dataset[index]
        magnitude = np.hypot(pair.flow[..., 0], pair.flow[..., 1])
        magnitudes.append(magnitude[pair.valid] if pair.valid is not None else magnitude.ravel())
    return np.concatenate(magnitudes).astype(np.float32)
