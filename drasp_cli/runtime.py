"""Process-wide memory and threading settings for a scorer whose decoding threads share the
machine with torch. They are measured choices (``benchmarks/RESULTS.md``, section 4), not
correctness settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache


def tune_process() -> dict[str, bool]:
    """Settings the ``drasp`` command applies before it imports torch; returns which took effect.

    ``OMP_WAIT_POLICY=PASSIVE`` (unless set already): idle torch threads sleep instead of
    spinning on the cores the decoders need. It only works before torch is imported, so a Python
    program that drives :class:`~drasp_cli.scoring.Scorer` itself calls this first.
    """
    done = {"omp_wait_policy": False}
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        done["omp_wait_policy"] = True
    return done


@cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory() -> bool:
    """Hand the allocator's free pages back to the system (glibc ``malloc_trim``); False where
    there is no such call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class HeapGuard:
    """Keeps a long run's memory from creeping up.

    glibc keeps freed multi-MB tensors on its heaps for reuse, and as a run goes on the heaps
    fragment: the peak of a 60-minute AES file was 423 MB above a 5-minute one's. :meth:`check`
    (after every batch) trims the heaps when the resident size has grown by ``slack`` bytes since
    the last trim. Trimming after every batch also kept the peak flat, but the pages it returns
    must be faulted in again, which cost HTSAT 5–10% of its throughput; growth-triggered trims
    happen rarely (never, once a run's memory is steady).
    """

    def __init__(self, slack: int = 64 << 20) -> None:
        self.slack = slack
        self.base = resident_bytes()
        self.enabled = _malloc_trim() is not None and self.base is not None
        self.trims = 0

    def check(self) -> bool:
        """Trim if memory grew by more than ``slack``; returns whether it trimmed."""
        if not self.enabled:
            return False
        now = resident_bytes()
        if now is None or now - self.base <= self.slack:
            return False
        release_free_memory()
        self.base = resident_bytes() or now
        self.trims += 1
        return True
