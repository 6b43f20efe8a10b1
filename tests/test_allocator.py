"""Freed CPU memory stays in the process: large tensors allocated again fault in no new pages."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dflowgen.cli as cli_module
from dflowgen.allocator import OPT_OUT_VARIABLE

# Allocates, touches and frees a 64 MiB tensor again and again, and prints the page faults of the last four times.
# The first times grow the heap: an aligned allocation does not fit the hole that its predecessor left.
_REFAULTS = """
import resource, sys, torch
from dflowgen.allocator import keep_freed_memory
print(keep_freed_memory())
for _ in range(16):
    torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.ones(16 * 2**20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_OF_64_MIB = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")

glibc_only = pytest.mark.skipif(getattr(ctypes.CDLL(None), "mallopt", None) is None, reason="needs glibc's mallopt")


def refaults(keep: str) -> tuple[bool, int]:
    """Whether keeping took effect, and the page faults of allocating a freed 64 MiB tensor four more times."""
    env = {**os.environ, OPT_OUT_VARIABLE: keep}
    lines = subprocess.run([sys.executable, "-c", _REFAULTS], env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    return lines[0] == "True", int(lines[1])


@glibc_only
def test_kept_memory_is_reused_without_page_faults():
    kept, faults = refaults("1")
    assert kept
    assert faults < PAGES_OF_64_MIB // 10


def _transparent_huge_pages_always() -> bool:
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return setting.is_file() and "[always]" in setting.read_text()


@glibc_only
@pytest.mark.skipif(_transparent_huge_pages_always(), reason="with transparent huge pages always on, a fresh "
                    "mapping faults in 2 MiB pages, so page faults no longer count the pages touched")
def test_opting_out_leaves_glibc_returning_memory():
    """The control: without keeping, the same allocation faults in (almost) every page again."""
    kept, faults = refaults("0")
    assert not kept
    assert faults > 4 * PAGES_OF_64_MIB // 2


def test_every_command_keeps_freed_memory(monkeypatch, tmp_path):
    """The ``dflowgen`` group sets it before any command runs, a refused one included."""
    calls = []
    monkeypatch.setattr(cli_module, "keep_freed_memory", lambda: calls.append(True))
    code = cli_module.cli.main(["verify", str(tmp_path / "absent")], standalone_mode=False)
    assert code != 0
    assert calls == [True]
