"""Process settings of the drasp command and the scorer's memory release (drasp_cli.runtime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from drasp_cli.runtime import release_free_memory, tune_process

PROBE = """
import json, os
from drasp_cli.runtime import tune_process
done = tune_process()
import torch  # noqa: F401
print(json.dumps({"done": done, "omp": os.environ.get("OMP_WAIT_POLICY")}))
"""


def run(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env={**env, **env_extra})
    return json.loads(out.stdout)


def test_tune_process_sets_passive_waits_before_torch_loads():
    assert run({}) == {"done": {"omp_wait_policy": True}, "omp": "PASSIVE"}


def test_tune_process_leaves_what_the_user_set():
    assert run({"OMP_WAIT_POLICY": "ACTIVE"}) == {"done": {"omp_wait_policy": False}, "omp": "ACTIVE"}


def test_tune_process_does_not_claim_a_setting_torch_already_read():
    import torch  # noqa: F401  (imported in this process by now in any case)

    before = os.environ.get("OMP_WAIT_POLICY")
    assert tune_process()["omp_wait_policy"] is False
    assert os.environ.get("OMP_WAIT_POLICY") == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_free_heap_pages_are_handed_back():
    import numpy as np

    blocks = [np.ones(1 << 18) for _ in range(64)]  # 64 x 2 MB
    del blocks[::2]
    assert release_free_memory() is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc")
def test_heap_guard_trims_only_after_growth():
    import numpy as np

    from drasp_cli.runtime import HeapGuard

    guard = HeapGuard(slack=32 << 20)
    assert guard.enabled and guard.check() is False  # nothing grew yet
    grown = np.ones(100 << 17)  # 100 MB, touched
    assert guard.check() is True and guard.trims == 1
    assert guard.check() is False  # the new base includes what is still in use
    del grown
