"""SIGKILL at random moments, many inside a checkpoint save: resume always works and ends bit for bit.

The campaign lives in ``tests/stress/crash_stress.py`` (its docstring says how kills are timed
and what is checked); ``python tests/stress/crash_stress.py --kills 200`` is the long version.
Here: 20 kills of a child training a tiny BERT (dropout on, ``save_steps=1``, 18 steps), each
at a seeded random moment drawn around the child's own save, step and start-up times. After
every kill each committed ``checkpoint-N`` passes ``verify_checkpoint`` and the next launch
resumes from the newest one; every run that reaches the end, and the last one (a fresh
interpreter resuming after the 20th kill), ends torch.equal to the uninterrupted run in every
parameter and Adam moment, with the same logged losses and learning rates.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.stress.crash_stress import INSIDE_SAVE, MAX_STEPS, report, run_campaign
from trainkit.checkpoint import list_checkpoints, remove_staging, verify_checkpoint

KILLS = 20


def test_twenty_sigkills_never_leave_an_incomplete_checkpoint_and_resume_bit_for_bit(tmp_path):
    summary = run_campaign(KILLS, tmp_path, seed=20240, final_spawn=True, log=print)
    print(report(summary))
    assert not summary["violations"]  # strict: the first one would have raised with its details
    assert summary["kills"] == KILLS
    # The final run and every cycle that finished were compared with the uninterrupted run.
    assert summary["cycles_compared"] >= 1
    # Kills resumed from real checkpoints, and a good share landed inside a save.
    assert summary["resumes"] >= KILLS // 2
    assert summary["inside_save"] >= KILLS // 4, report(summary)
    assert summary["checkpoints_verified"] >= KILLS
    assert set(summary["where"]) <= {"start-up/resume", "training step", *INSIDE_SAVE}
    assert MAX_STEPS == 18


def test_a_kill_inside_rotation_leaves_no_incomplete_checkpoint(tmp_path):
    """SIGKILL right after rotate_checkpoints deleted the first file of the oldest checkpoint: every
    folder still named checkpoint-N verifies, and after remove_staging only the kept ones are left.
    (crash_stress.py --save-total-limit 2 hits this window a few times in 200 kills.)"""
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {root!r})
        import torch
        from trainkit import init_state
        from trainkit.checkpoint import rotate_checkpoints, save_checkpoint
        from trainkit.state import Progress

        model = torch.nn.Linear(4, 2)
        state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), seed=0)
        for step in (1, 2, 3):
            save_checkpoint(state.replace(progress=Progress(step=step)), {str(out)!r})
        real_unlink = os.unlink

        def unlink_then_die(*args, **kwargs):
            real_unlink(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        os.unlink = unlink_then_die
        rotate_checkpoints({str(out)!r}, limit=2)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    for path in list_checkpoints(out):
        verify_checkpoint(path)  # CheckpointError: a file of the half-deleted checkpoint is missing
    remove_staging(out)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-3"]
