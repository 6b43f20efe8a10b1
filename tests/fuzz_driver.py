"""Mutation fuzzing of the file readers, run in a subprocess by ``test_fuzz_readers.py``.

``python fuzz_driver.py TARGET COUNT SEED WORKDIR MEMORY_MB`` writes one valid file of the
TARGET kind, then reads COUNT mutated copies with the matching reader under an address-space
limit of the current size + MEMORY_MB. Accepted outcomes are a successful read or a
``DflowgenError``; anything else (a traceback, ``MemoryError``) is printed as one JSON line per
input, and the exit status is 1. The input being read is kept in WORKDIR/current.* so that
a hang (the caller's timeout) leaves it behind to reproduce.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dflowgen.data.shard_dataset import ShardDataset
from dflowgen.data.manifest import MANIFEST_NAME, read_manifest, record_shard, sync_manifest, verify_shards
from dflowgen.data.shards import SampleBatch, ShardSetHeader, ShardWriter, shard_name
from dflowgen.errors import DflowgenError
from dflowgen.flow.io import read_flo, read_kitti_png, write_flo, write_kitti_png
from dflowgen.image_limits import PNG_SIGNATURE
from dflowgen.data.statistics import set_statistics

H, W = 12, 16


def _write_set(folder: Path) -> None:
    rng = np.random.default_rng(0)
    header = ShardSetHeader(recipe="[generate]\nseed = 1\n", seed=1, total_samples=4, shard_size=2, width=W, height=H,
                            flow_dtype="float32", asset_fingerprint="fuzz")
    folder.mkdir(parents=True)
    sync_manifest(folder, header)
    for index in range(header.num_shards):
        with ShardWriter(folder, header, index) as writer:
            count = len(writer.samples)
            writer.append(SampleBatch(
                img1=rng.integers(0, 256, (count, H, W, 3), dtype=np.uint8),
                img2=rng.integers(0, 256, (count, H, W, 3), dtype=np.uint8),
                flow=rng.normal(0, 3, (count, H, W, 2)).astype(np.float32),
                valid=np.ones((count, H, W), np.uint8), occ=np.zeros((count, H, W), np.uint8),
                params={"translation": rng.normal(size=(count, 3, 2)).astype(np.float32)},
                meta={"index": np.arange(writer.samples.start, writer.samples.stop, dtype=np.int64),
                      "effect_fog": np.zeros(count, np.uint8)},
            ))
            record_shard(folder, writer.commit())


def _read_set(folder: Path) -> None:
    dataset = ShardDataset(folder)
    for index in range(len(dataset)):
        dataset[index]
        dataset.meta(index)
    set_statistics(folder)
    verify_shards(folder)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random damage: flipped bytes, a zeroed or random stretch, a cut, a duplicated stretch, big numbers, or
    (for a PNG) a huge declared size."""
    data = bytearray(data)
    if data.startswith(PNG_SIGNATURE) and rng.random() < 0.25:
        # The size a PNG declares, with a correct checksum: decoders trust it and allocate what it says.
        data[16:24] = struct.pack(">II", rng.choice([1, 7, 1 << 16, 1 << 30]), rng.randrange(1, 1 << 31))
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        return bytes(data)
    kind = rng.randrange(6)
    if kind == 0:
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        start = rng.randrange(len(data))
        data[start : start + rng.randint(1, 4096)] = bytes(min(len(data) - start, 4096))[: rng.randint(1, 4096)]
    elif kind == 2:
        start = rng.randrange(min(len(data), 256))
        data[start : start + 8] = rng.randbytes(8)
    elif kind == 3:
        del data[rng.randrange(len(data)) :]
    elif kind == 4:
        start = rng.randrange(len(data))
        data[start:start] = data[start : start + rng.randint(1, 512)]
    else:  # a header field replaced by an extreme 32-bit value (sizes, offsets, counts)
        start = rng.randrange(min(len(data), 64))
        data[start : start + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff"])
    return bytes(data)


def mutate_manifest(text: bytes, rng: random.Random) -> bytes:
    """A manifest with one value replaced by something extreme or of another type (or plain byte damage)."""
    data = json.loads(text)
    if rng.random() < 0.3:
        return mutate(text, rng)
    extremes = [0, -1, 10**15, 2**64, "3", None, [], {}, 1.5, float("nan"), True]
    if rng.random() < 0.5 and data["shards"]:
        entry = rng.choice(data["shards"])
        entry[rng.choice(sorted(entry))] = rng.choice(extremes)
    else:
        data[rng.choice(sorted(data))] = rng.choice(extremes)
    return json.dumps(data).encode()


def main(target: str, count: int, seed: int, workdir: Path, memory_mb: int) -> int:
    rng = random.Random(seed)
    pristine = workdir / "pristine"
    if target == "flo":
        write_flo(workdir / "seed.flo", np.random.default_rng(seed).normal(size=(9, 7, 2)))
        original, suffix, read = (workdir / "seed.flo").read_bytes(), ".flo", read_flo
    elif target == "kitti":
        write_kitti_png(workdir / "seed.png", np.random.default_rng(seed).normal(size=(9, 7, 2)) * 5)
        original, suffix, read = (workdir / "seed.png").read_bytes(), ".png", read_kitti_png
    elif target in ("shard", "manifest"):
        _write_set(pristine)
        name = shard_name(1) if target == "shard" else MANIFEST_NAME
        original, suffix = (pristine / name).read_bytes(), ""
    else:
        raise SystemExit(f"unknown target {target}")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    current = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (current + (memory_mb << 20), hard))

    failures = 0
    for trial in range(count):
        if target in ("flo", "kitti"):
            path = workdir / f"current{suffix}"
            path.write_bytes(mutate(original, rng))
            reader: Callable[[], object] = lambda: read(path)
        else:
            folder = workdir / "current"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(pristine, folder)
            if target == "shard":
                (folder / MANIFEST_NAME).unlink()  # no checksum to hide behind: the readers face the bytes
                (folder / shard_name(1)).write_bytes(mutate(original, rng))
            else:
                (folder / MANIFEST_NAME).write_bytes(mutate_manifest(original, rng))
            reader = lambda: (read_manifest(folder), _read_set(folder))
        try:
            reader()
        except DflowgenError as error:
            if "\n" in str(error):
                failures += 1
                print(json.dumps({"trial": trial, "error": "multi-line DflowgenError", "message": str(error)[:300]}))
        except BaseException as error:  # noqa: BLE001 - exactly what this driver looks for
            failures += 1
            print(json.dumps({"trial": trial, "error": type(error).__name__, "message": str(error)[:300]}))
    return 1 if failures else 0


if __name__ == "__main__":
    target, count, seed, workdir, memory_mb = sys.argv[1:6]
    sys.exit(main(target, int(count), int(seed), Path(workdir), int(memory_mb)))
