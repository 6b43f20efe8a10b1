"""Readers for the optical-flow benchmarks and for unlabelled frame folders.

Each reader is a torch Dataset of :class:`dflowgen.data.sample.FlowPair` that lists its
files when built (cheap ``len``) and decodes one pair per ``__getitem__``. A root with
the wrong layout is a :class:`DflowgenError` saying which layout was expected.
"""

from dflowgen.data.readers.autoflow import AutoFlow
from dflowgen.data.readers.base import PairFiles, PairReader
from dflowgen.data.readers.chairs import FlyingChairs
from dflowgen.data.readers.frames import FrameFolder
from dflowgen.data.readers.hd1k import HD1K
from dflowgen.data.readers.kitti import KITTI
from dflowgen.data.readers.middlebury import Middlebury
from dflowgen.data.readers.sintel import Sintel
from dflowgen.data.readers.spring import Spring
from dflowgen.data.readers.things import FlyingThings3D

__all__ = ["HD1K", "KITTI", "AutoFlow", "FlyingChairs", "FlyingThings3D", "FrameFolder", "Middlebury", "PairFiles",
           "PairReader", "Sintel", "Spring"]
