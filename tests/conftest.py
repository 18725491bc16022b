"""Test configuration shared by every test module.

Hypothesis profiles: ``ci`` (the default under ``CI=true``) is derandomized and bounded so the
whole suite stays well inside CI's time limit on 2 cores; ``dev`` explores a little more.
Select one with ``HYPOTHESIS_PROFILE=dev``.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tiny models run fastest on one thread, and the 2-core CI machine runs nothing else.
torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def run_example(tmp_path, monkeypatch):
    """Run an example script in a fresh working directory, as `python examples/<name>.py` would."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", ["example"])

    def run(name: str) -> dict:
        return runpy.run_path(str(EXAMPLES / name), run_name="__main__")

    return run
