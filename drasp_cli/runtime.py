"""Process-wide settings that the ``drasp`` command applies before it imports torch.

They are measured choices for a scorer whose decoding threads share the machine with torch
(``benchmarks/RESULTS.md``, section 4), not correctness settings; a Python program that drives
:class:`~drasp_cli.scoring.Scorer` itself can call :func:`tune_process` first, the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 1 << 20  # bytes; allocations from here up go straight to mmap and back on free
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def tune_process() -> dict[str, bool]:
    """Apply both settings; returns which of them took effect.

    - ``OMP_WAIT_POLICY=PASSIVE`` (unless set already): idle torch threads sleep instead of
      spinning on the cores the decoders need. It only works before torch is imported.
    - glibc's mmap threshold fixed at 1 MiB (unless ``MALLOC_MMAP_THRESHOLD_`` is set): by
      default glibc raises the threshold each time a large block is freed, so the multi-MB
      tensors of every batch end up on a heap that it never gives back, and a long run's
      memory creeps up (AES, 60 minutes of audio: +423 MB over 5 minutes; fixed: flat).
    """
    done = {"omp_wait_policy": False, "mmap_threshold": False}
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        done["omp_wait_policy"] = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            done["mmap_threshold"] = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        except (OSError, AttributeError):  # not glibc (musl has no mallopt to speak of)
            pass
    return done
