"""Per-sample random generators: any sample can be re-made alone, on any worker."""

import hashlib

import torch


def sample_seed(run_seed: int, sample_index: int, stream: str = "") -> int:
    """A 63-bit seed derived from (run seed, global sample index, stream name).

    Hashing rather than adding keeps streams of neighbouring runs and samples
    uncorrelated (seed 1 sample 2 and seed 2 sample 1 differ).
    """
    key = f"{run_seed}:{sample_index}:{stream}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def sample_generator(run_seed: int, sample_index: int, stream: str = "") -> torch.Generator:
    """A CPU ``torch.Generator`` for one sample.

    Draws happen on the CPU and are moved to the device afterwards, so the same
    seed gives the same sample on CPU and CUDA.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(sample_seed(run_seed, sample_index, stream))
    return generator
