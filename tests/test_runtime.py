"""Process settings of the drasp command (drasp_cli.runtime), each checked in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, os
from drasp_cli.runtime import tune_process
done = tune_process()
import torch  # noqa: F401
print(json.dumps({"done": done, "omp": os.environ.get("OMP_WAIT_POLICY")}))
"""


def run(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MALLOC_MMAP_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env={**env, **env_extra})
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_process_sets_passive_waits_and_the_mmap_threshold():
    r = run({})
    assert r == {"done": {"omp_wait_policy": True, "mmap_threshold": True}, "omp": "PASSIVE"}


def test_tune_process_leaves_what_the_user_set():
    r = run({"OMP_WAIT_POLICY": "ACTIVE", "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert r == {"done": {"omp_wait_policy": False, "mmap_threshold": False}, "omp": "ACTIVE"}


def test_tune_process_does_not_claim_a_setting_torch_already_read():
    import torch  # noqa: F401  (imported in this process by now in any case)

    from drasp_cli.runtime import tune_process

    before = os.environ.get("OMP_WAIT_POLICY")
    assert tune_process()["omp_wait_policy"] is False
    assert os.environ.get("OMP_WAIT_POLICY") == before
