"""MPI-Sintel in its official layout.

::

    ROOT/training/{clean,final}/<scene>/frame_0001.png ...
    ROOT/training/flow/<scene>/frame_0001.flo ...          flow from frame i to frame i+1
    ROOT/training/invalid/<scene>/frame_0001.png ...        optional: pixels without valid flow
    ROOT/training/occlusions/<scene>/frame_0001.png ...     optional: pixels occluded in frame i+1
    ROOT/test/{clean,final}/<scene>/frame_0001.png ...      no flow

A training pair is (frame i, frame i+1) wherever frame i has a flow file and frame i+1
exists in the pass, so partial copies (a few frames per scene) work. Test pairs are all
consecutive frames.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from dflowgen.data.readers.base import PairFiles, PairReader
from dflowgen.data.readers.files import require_folder
from dflowgen.errors import DflowgenError

PASSES = ("clean", "final")
PASS_CHOICES = ("clean", "final", "both")
SPLITS = {"train": "training", "test": "test"}
_FRAME = re.compile(r"frame_(\d+)\.png")


def _frame_numbers(scene_dir: Path) -> set[int]:
    return {int(m.group(1)) for p in scene_dir.iterdir() if (m := _FRAME.fullmatch(p.name))}


class Sintel(PairReader):
    """MPI-Sintel pairs of one or both render passes.

    Args:
        root: the folder holding ``training/`` (and/or ``test/``).
        render_pass: "clean", "final" or "both" (clean pairs first, then final).
        split: "train" (``training/``, with flow) or "test" (``test/``, flow None).
        scenes: keep only these scenes (names of the folders under the pass); None keeps all.
        exclude_occluded: also mark pixels of ``occlusions/`` invalid (the "noc" protocol).

    ``valid`` is ``~invalid`` when ``invalid/`` masks exist, else None (every pixel valid).
    Names are ``"<pass>/<scene>/frame_0001"``.
    """

    def __init__(
        self,
        root: str | Path,
        render_pass: str = "both",
        split: str = "train",
        scenes: Sequence[str] | None = None,
        exclude_occluded: bool = False,
    ) -> None:
        root = require_folder(root, "Sintel")
        if render_pass not in PASS_CHOICES:
            raise DflowgenError(f"Sintel pass must be one of {', '.join(PASS_CHOICES)}, got {render_pass!r}")
        if split not in SPLITS:
            raise DflowgenError(f"Sintel split must be one of {', '.join(SPLITS)}, got {split!r}")
        split_dir = root / SPLITS[split]
        passes = PASSES if render_pass == "both" else (render_pass,)
        for name in passes:
            if not (split_dir / name).is_dir():
                raise DflowgenError(
                    f"no Sintel frames under {root}: expected {split_dir / name}/<scene>/frame_0001.png")
        flow_dir = split_dir / "flow"
        if split == "train" and not flow_dir.is_dir():
            raise DflowgenError(f"no Sintel flow under {root}: expected {flow_dir}/<scene>/frame_0001.flo")

        scene_dirs = {name: sorted(p for p in (split_dir / name).iterdir() if p.is_dir()) for name in passes}
        available = sorted({d.name for dirs in scene_dirs.values() for d in dirs})
        if scenes is not None:
            unknown = sorted(set(scenes) - set(available))
            if unknown:
                raise DflowgenError(
                    f"Sintel scene(s) {', '.join(unknown)} not under {split_dir} ({'/'.join(passes)}); "
                    f"available: {', '.join(available)}")

        pairs = []
        for name in passes:
            for scene_dir in scene_dirs[name]:
                if scenes is not None and scene_dir.name not in scenes:
                    continue
                pairs += self._scene_pairs(split_dir, name, scene_dir, split == "train", exclude_occluded)
        if not pairs:
            chosen = f"scenes {', '.join(scenes)}" if scenes is not None else "any scene"
            raise DflowgenError(f"no Sintel {'/'.join(passes)} pairs for {chosen} under {split_dir}")
        super().__init__(pairs)

    @staticmethod
    def _scene_pairs(split_dir: Path, pass_name: str, scene_dir: Path, labelled: bool,
                     exclude_occluded: bool) -> list[PairFiles]:
        scene = scene_dir.name
        frames = _frame_numbers(scene_dir)
        pairs = []
        for number in sorted(frames):
            if number + 1 not in frames:
                continue
            stem = f"frame_{number:04d}"
            flow = split_dir / "flow" / scene / f"{stem}.flo" if labelled else None
            if flow is not None and not flow.is_file():
                continue
            masks = []
            if labelled:
                invalid = split_dir / "invalid" / scene / f"{stem}.png"
                if invalid.is_file():
                    masks.append(invalid)
                if exclude_occluded:
                    occlusion = split_dir / "occlusions" / scene / f"{stem}.png"
                    if not occlusion.is_file():
                        raise DflowgenError(f"excluding occluded pixels needs {occlusion}, which is missing")
                    masks.append(occlusion)
            pairs.append(PairFiles(
                img1=scene_dir / f"{stem}.png",
                img2=scene_dir / f"frame_{number + 1:04d}.png",
                flow=flow,
                name=f"{pass_name}/{scene}/{stem}",
                invalid_masks=tuple(masks),
            ))
        return pairs
