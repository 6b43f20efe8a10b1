"""PNG previews of generated samples: img1 | img2 | flow in the colour wheel."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from dflowgen.data.sample import FlowPair
from dflowgen.data.shard_dataset import read_pair
from dflowgen.data.shard_check import open_shard, shard_files
from dflowgen.files import atomic_write_bytes
from dflowgen.flow.viz import flow_to_color

PREVIEW_FOLDER = "previews"
_GAP = 4  # white pixels between the three panels


def preview_image(pair: FlowPair) -> np.ndarray:
    """One sample as an H×(3W+2·gap)×3 uint8 strip: img1, img2, flow colours (invalid pixels black)."""
    flow = pair.flow if pair.valid is None else np.where(pair.valid[..., None], pair.flow, np.nan)
    gap = np.full((pair.img1.shape[0], _GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([pair.img1, gap, pair.img2, gap, flow_to_color(flow)], axis=1)


def write_previews(folder: str | Path, count: int, shards: Iterable[int] | None = None) -> list[Path]:
    """Write ``previews/sample-<index>.png`` for the samples with global index < ``count``.

    Only the shards with the given indices are read (default: every shard present), so
    the processes of a split run each preview their own samples.
    """
    folder = Path(folder)
    present = shard_files(folder)
    wanted = present.keys() if shards is None else [index for index in shards if index in present]
    target = folder / PREVIEW_FOLDER
    written = []
    for index in sorted(wanted):
        with open_shard(present[index]) as shard:
            sample_indices = shard["meta/index"][:]
            for row in np.flatnonzero(sample_indices < count):
                target.mkdir(exist_ok=True)
                path = target / f"sample-{int(sample_indices[row]):07d}.png"
                buffer = io.BytesIO()
                Image.fromarray(preview_image(read_pair(shard, int(row)))).save(buffer, format="PNG")
                atomic_write_bytes(path, buffer.getvalue())
                written.append(path)
    return written
