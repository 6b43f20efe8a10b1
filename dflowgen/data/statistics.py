"""Statistics of a generated set, computed by streaming its shards a few samples at a time."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from dflowgen.data.manifest import read_manifest
from dflowgen.data.shard_check import H5_ERRORS, h5_reason, open_shard, read_shard_header, shard_files
from dflowgen.files import file_sha256
from dflowgen.figures import new_figure, save_png
from dflowgen.errors import DflowgenError, option

PLOT_NAME = "flow-magnitude.png"
# Magnitudes are first counted in fine bins of this width (pixels), so the histogram
# can be streamed without knowing the largest flow in advance, then merged for display.
_FINE_BIN = 0.25
_BLOCK = 8  # samples read at once
_BAR_WIDTH = 40
_LOSS_SUFFIXES = ("_loss_initial", "_loss_final")


@dataclasses.dataclass(frozen=True)
class SetStatistics:
    """Summary of a set. Flow statistics are over valid pixels only.

    ``occluded_fraction`` is the share of valid pixels whose point is hidden in frame 2 or
    leaves it (None for format-1 sets, which stored no occlusion).
    For an optimised set, ``losses`` holds the mean of every per-sample proxy-loss column
    (``target_loss_initial``, ``target_loss_final``, ...) and of the per-sample ratio
    ``r = base/target`` before and after (``ratio_initial``, ``ratio_final``), and
    ``dropped`` the samples not written, by reason.

    ``histogram_edges`` (pixels, length bins+1) and ``histogram_counts`` (pixels per
    bin) describe the flow magnitude; ``effects`` maps each effect to the fraction of
    samples it was applied to.
    """

    folder: str
    num_samples: int
    num_shards: int
    planned_shards: int
    complete: bool
    width: int
    height: int
    seed: int
    flow_dtype: str
    valid_fraction: float
    occluded_fraction: float | None
    flow_mean: float
    flow_max: float
    effects: dict[str, float]
    histogram_edges: list[float]
    histogram_counts: list[int]
    losses: dict[str, float] = dataclasses.field(default_factory=dict)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _MagnitudeAccumulator:
    """Running count, sum, maximum and fine histogram of flow magnitudes."""

    def __init__(self) -> None:
        self.fine_counts = np.zeros(1, dtype=np.int64)
        self.valid = 0
        self.occluded = 0
        self.pixels = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, flow: np.ndarray, valid: np.ndarray, occ: np.ndarray | None) -> None:
        """flow: n×H×W×2, valid and occ: n×H×W."""
        valid = valid.astype(bool)
        magnitude = np.hypot(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))[valid]
        if occ is not None:
            self.occluded += int(np.count_nonzero(occ.astype(bool) & valid))
        self.pixels += valid.size
        self.valid += magnitude.size
        if magnitude.size == 0:
            return
        self.total += float(magnitude.sum(dtype=np.float64))
        self.max = max(self.max, float(magnitude.max()))
        counts = np.bincount((magnitude / _FINE_BIN).astype(np.int64))
        if len(counts) > len(self.fine_counts):
            self.fine_counts = np.pad(self.fine_counts, (0, len(counts) - len(self.fine_counts)))
        self.fine_counts[: len(counts)] += counts

    def histogram(self, bins: int) -> tuple[list[float], list[int]]:
        """At most ``bins`` equal bins from 0 covering every magnitude (edges in pixels)."""
        group = -(-len(self.fine_counts) // bins)
        padded = np.pad(self.fine_counts, (0, -len(self.fine_counts) % group))
        counts = padded.reshape(-1, group).sum(axis=1)
        edges = np.arange(len(counts) + 1) * group * _FINE_BIN
        return edges.tolist(), counts.tolist()


def _add_shard(shard: h5py.File, magnitudes: _MagnitudeAccumulator, effect_counts: dict[str, int],
               loss_sums: dict[str, float]) -> tuple[int, bool]:
    """Add one checked shard's samples to the running statistics; (its sample count, whether it stores ``occ``)."""
    count = int(shard.attrs["num_samples"])
    if count == 0:  # every sample of the shard was dropped: it holds no datasets
        return 0, True
    has_occ = "occ" in shard
    for start in range(0, count, _BLOCK):
        rows = slice(start, min(start + _BLOCK, count))
        magnitudes.add(shard["flow"][rows], shard["valid"][rows], shard["occ"][rows] if has_occ else None)
    meta = shard["meta"]
    for name, column in meta.items():
        if name.startswith("effect_"):
            effect = name.removeprefix("effect_")
            effect_counts[effect] = effect_counts.get(effect, 0) + int(np.count_nonzero(column[:]))
        elif name.endswith(_LOSS_SUFFIXES):
            loss_sums[name] = loss_sums.get(name, 0.0) + float(np.sum(column[:], dtype=np.float64))
    for when in ("initial", "final"):
        if f"target_loss_{when}" in meta and f"base_loss_{when}" in meta:
            ratio = meta[f"base_loss_{when}"][:] / meta[f"target_loss_{when}"][:]
            loss_sums[f"ratio_{when}"] = loss_sums.get(f"ratio_{when}", 0.0) + float(ratio.sum(dtype=np.float64))
    return count, has_occ


def set_statistics(folder: str | Path, bins: int = 20, quiet: bool = True) -> SetStatistics:
    """Statistics of the complete shards in ``folder``, read ``_BLOCK`` samples at a time."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DflowgenError(f"shard folder not found: {folder}")
    if bins < 1:
        raise DflowgenError(f"{option('bins')} must be positive, got {bins}")
    shards = shard_files(folder)
    if not shards:
        raise DflowgenError(f"no shards (shard-*.h5) in {folder}")
    manifest = read_manifest(folder)
    header = manifest.header if manifest else read_shard_header(next(iter(shards.values())))
    magnitudes = _MagnitudeAccumulator()
    effect_counts: dict[str, int] = {}
    loss_sums: dict[str, float] = {}
    num_samples = 0
    has_occ = True
    listed = {entry.index: entry for entry in manifest.shards} if manifest else {}
    for index, path in tqdm(shards.items(), desc="inspect", unit="shard", disable=True if quiet else None):
        entry = listed.get(index)
        with open_shard(path, header, entry.bytes if entry else None) as shard:
            # Every byte is read below anyway: hashing first names a damaged shard instead of decoding it.
            if entry is not None and file_sha256(path) != entry.sha256:
                raise DflowgenError(f"shard {path} is damaged: sha256 differs from the manifest; "
                                    f"run `dflowgen verify {folder}`")
            try:
                count, shard_has_occ = _add_shard(shard, magnitudes, effect_counts, loss_sums)
            except H5_ERRORS as error:
                raise DflowgenError(f"shard {path} is damaged: {h5_reason(error)}; "
                                    f"run `dflowgen verify {folder}`") from None
        has_occ &= shard_has_occ
        num_samples += count
    edges, counts = magnitudes.histogram(bins)
    return SetStatistics(
        folder=str(folder),
        num_samples=num_samples,
        num_shards=len(shards),
        planned_shards=header.num_shards,
        complete=bool(manifest and manifest.complete and len(shards) == header.num_shards),
        width=header.width,
        height=header.height,
        seed=header.seed,
        flow_dtype=header.flow_dtype,
        valid_fraction=magnitudes.valid / max(magnitudes.pixels, 1),
        occluded_fraction=magnitudes.occluded / max(magnitudes.valid, 1) if has_occ else None,
        flow_mean=magnitudes.total / max(magnitudes.valid, 1),
        flow_max=magnitudes.max,
        effects={name: effect_counts[name] / max(num_samples, 1) for name in sorted(effect_counts)},
        histogram_edges=edges,
        histogram_counts=counts,
        losses={name: loss_sums[name] / max(num_samples, 1) for name in sorted(loss_sums)},
        dropped=manifest.dropped_by_reason if manifest else {},
    )


def format_statistics(stats: SetStatistics) -> str:
    """A human-readable report with the magnitude histogram as text bars."""
    lines = [
        f"set        {stats.folder}",
        f"samples    {stats.num_samples} in {stats.num_shards} of {stats.planned_shards} shards"
        + ("" if stats.complete else " (incomplete)"),
        f"resolution {stats.width}x{stats.height}, seed {stats.seed}, flow {stats.flow_dtype}",
        f"valid      {stats.valid_fraction:.1%} of pixels labelled"
        + ("" if stats.occluded_fraction is None else f", {stats.occluded_fraction:.1%} of them occluded or leaving"),
        f"flow       mean {stats.flow_mean:.2f} px, max {stats.flow_max:.2f} px (valid pixels)",
    ]
    if stats.effects:
        lines.append("effects    " + ", ".join(f"{name} {fraction:.0%}" for name, fraction in stats.effects.items()))
    rows = {"target": ("target_loss", "proxy loss"), "base": ("base_loss", "proxy loss"),
            "ratio r": ("ratio", "base/target")}
    for label, (column, what) in rows.items():
        initial, final = (stats.losses.get(f"{column}_{when}") for when in ("initial", "final"))
        if initial is not None and final is not None:
            lines.append(f"{label:<10} {what} {initial:.3f} -> {final:.3f} (mean over written samples)")
    if stats.dropped:
        lines.append("dropped    " + ", ".join(f"{count} {reason}" for reason, count in stats.dropped.items()))
    lines.append("flow magnitude histogram (px):")
    total = max(sum(stats.histogram_counts), 1)
    peak = max(max(stats.histogram_counts), 1)
    for lo, hi, count in zip(stats.histogram_edges, stats.histogram_edges[1:], stats.histogram_counts):
        bar = "#" * round(_BAR_WIDTH * count / peak)
        lines.append(f"  {lo:7.2f} - {hi:7.2f} | {bar:<{_BAR_WIDTH}} {count / total:6.1%}")
    return "\n".join(lines)


def plot_histogram(stats: SetStatistics, path: str | Path) -> None:
    """Save the flow-magnitude histogram as a PNG (written atomically)."""
    edges = np.asarray(stats.histogram_edges)
    counts = np.asarray(stats.histogram_counts)
    figure = new_figure(6, 3.5)
    axes = figure.add_subplot()
    axes.bar(edges[:-1], counts / max(counts.sum(), 1), width=np.diff(edges), align="edge", edgecolor="white")
    axes.set_xlabel("flow magnitude (px)")
    axes.set_ylabel("fraction of valid pixels")
    axes.set_title(f"{Path(stats.folder).name}: {stats.num_samples} samples, {stats.width}x{stats.height}")
    figure.tight_layout()
    try:
        save_png(figure, Path(path))
    except OSError as error:
        raise DflowgenError(f"cannot write plot {path}: {error.strerror or error} (choose another {option('path', flag='--plot')})") from None
