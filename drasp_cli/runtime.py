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


def release_free_memory() -> bool:
    """Hand the allocator's free pages back to the system (glibc ``malloc_trim``); False where
    there is no such call.

    glibc keeps freed multi-MB tensors on its heaps for reuse, and as a long run goes on the
    heaps fragment: the peak of a 60-minute AES file was 423 MB above a 5-minute one's. The
    scorer calls this every few seconds, which keeps the peak flat at no measurable cost (a
    fixed 1 MiB mmap threshold did the same but made a light model 20% slower).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
