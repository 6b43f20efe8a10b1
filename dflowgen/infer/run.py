"""``dflowgen infer`` as a library call: every pair of every input sequence through one network, to files."""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn
from tqdm import tqdm

from dflowgen.infer.estimate import estimate_pairs
from dflowgen.infer.outputs import VIDEO_NAME, output_paths, write_outputs, write_video
from dflowgen.infer.sources import FrameSequence


@dataclass(frozen=True)
class InferResult:
    """Counts of one run: pairs estimated now, and pairs skipped because their files were already there."""

    written: int
    skipped: int
    videos: list[Path]


def run_inference(
    model: nn.Module,
    sequences: list[FrameSequence],
    out_dir: Path,
    formats: tuple[str, ...],
    iters: int = 12,
    max_size: int | None = None,
    batch_size: int = 1,
    video_out: bool = False,
    progress: bool = True,
) -> InferResult:
    """Estimate and write the flow of every consecutive pair of ``sequences`` under ``out_dir``.

    A pair whose files (every chosen format) all exist is skipped, so a rerun finishes an
    interrupted one. ``video_out`` also writes ``<sequence>/viz.mp4`` (the ``viz`` images are then
    written too). See :mod:`dflowgen.infer.outputs` for the layout.
    """
    if video_out and "viz" not in formats:
        formats = (*formats, "viz")
    total = None if any(sequence.pairs is None for sequence in sequences) else sum(s.pairs for s in sequences)
    written = skipped = 0
    videos = []
    with tqdm(total=total, desc="infer", unit="pair", dynamic_ncols=True,
              disable=not progress or not sys.stderr.isatty()) as bar:
        for sequence in sequences:
            folder = out_dir / sequence.name
            pending: deque[tuple[dict[str, Path], np.ndarray]] = deque()
            visualisations: list[Path] = []

            def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                nonlocal skipped
                previous = None
                for stem, frame in sequence.open():
                    if previous is not None:
                        paths = output_paths(folder, previous[0], formats)
                        if "viz" in paths:
                            visualisations.append(paths["viz"])
                        if all(path.is_file() for path in paths.values()):
                            skipped += 1
                            bar.update()
                        else:
                            pending.append((paths, previous[1]))
                            yield previous[1], frame
                    previous = stem, frame

            fresh = 0
            for flow in estimate_pairs(model, pairs(), iters, max_size, batch_size):
                paths, frame = pending.popleft()
                write_outputs(paths, frame, flow)
                fresh += 1
                bar.update()
            written += fresh
            if video_out:
                video = folder / VIDEO_NAME
                if fresh or not video.is_file():
                    write_video(visualisations, video)
                videos.append(video)
    return InferResult(written, skipped, videos)
