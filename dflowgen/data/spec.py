"""Data specs: one string names a dataset, its options and its weight in a training mix.

Grammar: ``KIND:ROOT[:OPTION]...[*WEIGHT]``, for example ``sintel:/data/Sintel:final*100``,
``chairs:/data/FlyingChairs:train``, ``kitti:/data/KITTI:occ``, ``shards:out/dir``,
``things:/data/FlyingThings3D:clean:train``, ``autoflow:/data/AutoFlow``, ``spring:/data/spring:train``,
``frames:/data/video``, ``sintel:/data/Sintel:final:scenes=alley_1,cave_2``.

- ``KIND`` is one of :data:`KINDS`.
- ``OPTION`` is a word (``final``, ``noc``, ...) or ``key=value`` (``scenes=a,b``); the valid
  ones depend on the kind (see :data:`SPEC_HELP`). Options are taken from the right while
  they are known words or ``key=value`` tokens, so ROOT may itself contain ``:`` as long as
  its last ``:``-separated part is not an option word. Omitted options take the reader's
  default.
- ``WEIGHT`` is a positive integer (default 1): how many times the dataset is repeated in
  a mix. A ``*`` followed by text with ``/`` or ``:`` belongs to ROOT instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from dflowgen.data.readers import (
    HD1K,
    KITTI,
    AutoFlow,
    FlyingChairs,
    FlyingThings3D,
    FrameFolder,
    Middlebury,
    Sintel,
    Spring,
)
from dflowgen.errors import DflowgenError


@dataclass(frozen=True)
class _Option:
    """One reader keyword a spec can set: by a word from ``words`` or as ``key=value``."""

    argument: str
    words: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None
    parse: Callable[[str], Any] | None = None

    def describe(self) -> str:
        return "|".join(self.words) if self.words else f"{self.key}=A,B"


def _name_list(value: str) -> tuple[str, ...]:
    names = tuple(name for name in value.split(",") if name)
    if not names:
        raise ValueError("expected a comma-separated list of names")
    return names


def _open_shards(root: Path) -> Dataset:
    # Imported here: only shards need h5py.
    from dflowgen.data.shard_dataset import ShardDataset
    from dflowgen.data.manifest import set_folders

    folders = set_folders(root)
    return ShardDataset(root) if folders == [root] else ConcatDataset([ShardDataset(folder) for folder in folders])


_SPLIT = {"train": "train", "test": "test"}


@dataclass(frozen=True)
class _Kind:
    reader: Callable[..., Dataset]
    layout: str
    options: tuple[_Option, ...] = ()


KINDS: dict[str, _Kind] = {
    "sintel": _Kind(Sintel, "ROOT/training/{clean,final}/<scene>/frame_0001.png, ROOT/training/flow/<scene>/*.flo", (
        _Option("render_pass", {"clean": "clean", "final": "final", "both": "both"}),
        _Option("split", _SPLIT),
        _Option("exclude_occluded", {"noc": True}),
        _Option("scenes", key="scenes", parse=_name_list),
    )),
    "kitti": _Kind(KITTI, "ROOT/training/image_2/000000_10.png, ROOT/training/flow_occ/000000_10.png", (
        _Option("flow", {"occ": "occ", "noc": "noc"}),
        _Option("split", _SPLIT),
    )),
    "chairs": _Kind(FlyingChairs, "ROOT/FlyingChairs_release/data/00001_img1.ppm, ROOT/FlyingChairs_train_val.txt", (
        _Option("split", {"train": "train", "val": "val", "all": "all"}),
    )),
    "things": _Kind(FlyingThings3D, "ROOT/frames_{cleanpass,finalpass}/TRAIN/A/0000/left/0006.png, "
                    "ROOT/optical_flow/TRAIN/A/0000/into_future/left/OpticalFlowIntoFuture_0006_L.pfm", (
        _Option("render_pass", {"clean": "clean", "final": "final", "both": "both"}),
        _Option("split", _SPLIT),
        _Option("camera", {"left": "left", "right": "right", "left+right": "both"}),
        _Option("direction", {"future": "future", "past": "past", "future+past": "both"}),
    )),
    "autoflow": _Kind(AutoFlow, "ROOT/static_40k_png_1_of_4/table_0_batch_0/im0.png, im1.png, forward.flo"),
    "spring": _Kind(Spring, "ROOT/train/0001/frame_left/frame_left_0001.png, "
                    "ROOT/train/0001/flow_FW_left/flow_FW_left_0001.flo5", (
        _Option("split", _SPLIT),
        _Option("camera", {"left": "left", "right": "right", "left+right": "both"}),
        _Option("direction", {"forward": "forward", "backward": "backward", "forward+backward": "both"}),
    )),
    "middlebury": _Kind(Middlebury, "ROOT/other-data/<scene>/frame10.png, ROOT/other-gt-flow/<scene>/flow10.flo", (
        _Option("split", _SPLIT),
    )),
    "hd1k": _Kind(HD1K, "ROOT/hd1k_input/image_2/000000_0000.png, ROOT/hd1k_flow_gt/flow_occ/000000_0000.png"),
    "shards": _Kind(_open_shards, "DIR written by `dflowgen generate`"),
    "frames": _Kind(FrameFolder, "DIR/00000.png, DIR/00001.png, ... (or one sub-folder per sequence)"),
}

SPEC_HELP = "KIND:ROOT[:OPTION]...[*WEIGHT] with KIND and OPTIONs: " + "; ".join(
    f"{name}[:{':'.join(o.describe() for o in kind.options)}]" if kind.options else name
    for name, kind in KINDS.items())

_WEIGHT = re.compile(r"(?P<body>.*)\*(?P<weight>[^*/:]*)", re.DOTALL)
_KEY_VALUE = re.compile(r"(?P<key>[A-Za-z_]+)=(?P<value>.*)", re.DOTALL)


def _valid_options(kind: str) -> str:
    options = KINDS[kind].options
    if not options:
        return f"{kind} takes no options"
    return f"valid options for {kind}: {', '.join(o.describe() for o in options)}"


@dataclass(frozen=True)
class ParsedSpec:
    """A spec split into its parts, before any file is touched.

    ``options`` maps reader keyword arguments to values (only those the spec sets).
    """

    kind: str
    root: Path
    options: Mapping[str, Any]
    weight: int


def _take_option(kind: str, token: str, spec: str) -> tuple[str, Any] | None:
    """The (reader argument, value) a trailing token sets, or None when it is part of ROOT."""
    key_value = _KEY_VALUE.fullmatch(token)
    for option in KINDS[kind].options:
        if token in option.words:
            return option.argument, option.words[token]
        if key_value and option.key == key_value.group("key"):
            try:
                return option.argument, option.parse(key_value.group("value"))
            except ValueError as error:
                raise DflowgenError(f"bad option '{token}' in data spec '{spec}': {error}") from None
    if key_value:
        raise DflowgenError(f"unknown option '{token}' in data spec '{spec}'; {_valid_options(kind)}")
    return None


def parse_spec(spec: str) -> ParsedSpec:
    """Split ``KIND:ROOT[:OPTION]...[*WEIGHT]`` into its parts; DflowgenError when malformed."""
    body, weight = spec.strip(), 1
    match = _WEIGHT.fullmatch(body)
    if match:
        body, token = match.group("body"), match.group("weight")
        if not token.isdigit() or int(token) < 1:
            raise DflowgenError(f"bad weight '{token}' in data spec '{spec}': expected a positive integer after '*'")
        weight = int(token)
    kind, _, rest = body.partition(":")
    if kind not in KINDS:
        raise DflowgenError(f"unknown data kind '{kind}' in data spec '{spec}'; valid kinds: {', '.join(KINDS)}")
    segments = rest.split(":")
    options: dict[str, Any] = {}
    while len(segments) > 1 and (taken := _take_option(kind, segments[-1], spec)) is not None:
        argument, value = taken
        if argument in options:
            raise DflowgenError(f"data spec '{spec}' sets {argument} twice; {_valid_options(kind)}")
        options[argument] = value
        segments.pop()
    root = ":".join(segments)
    if not root:
        raise DflowgenError(f"data spec '{spec}' has no root: expected {kind}:ROOT[:OPTION]...[*WEIGHT]")
    return ParsedSpec(kind, Path(root), options, weight)


@dataclass(frozen=True, eq=False)
class DataSpec:
    """An opened data spec. Unpacks as ``dataset, weight, sparse = open_spec(text)``.

    ``dataset`` is a torch Dataset of FlowPair, ``weight`` how many times it repeats in a
    mix, ``sparse`` whether its flow is sparse (augment with ``FlowAugmentor(sparse=True)``).
    """

    dataset: Dataset
    weight: int
    sparse: bool
    kind: str
    root: Path
    options: Mapping[str, Any]
    text: str

    def __iter__(self) -> Iterator[Any]:
        return iter((self.dataset, self.weight, self.sparse))


def open_spec(spec: str) -> DataSpec:
    """Open the dataset a spec names (lists its files; decodes nothing yet).

    >>> dataset, weight, sparse = open_spec("sintel:/data/Sintel:final*100")  # doctest: +SKIP
    """
    parsed = parse_spec(spec)
    if not parsed.root.exists():
        head, _, last = str(parsed.root).rpartition(":")
        if head and Path(head).exists():
            raise DflowgenError(f"unknown option '{last}' in data spec '{spec}'; {_valid_options(parsed.kind)}")
        raise DflowgenError(f"data spec '{spec}': {parsed.root} does not exist (expected {KINDS[parsed.kind].layout})")
    dataset = KINDS[parsed.kind].reader(parsed.root, **parsed.options)
    return DataSpec(dataset, parsed.weight, bool(getattr(dataset, "sparse", False)), parsed.kind, parsed.root,
                    parsed.options, spec)
