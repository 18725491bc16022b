"""SIGKILL a training process at random moments, many inside a checkpoint save, and resume each time.

Usage (from the repository root)::

    python tests/stress/crash_stress.py --kills 200            # the stress run (a few minutes)
    python tests/stress/crash_stress.py --kills 30 --seed 3    # a quick one
    python tests/stress/crash_stress.py --kills 50 --spawn     # a fresh interpreter per launch (slow)
    python tests/stress/crash_stress.py --kills 200 --save-total-limit 2   # also kill inside rotation

``tests/test_crash.py`` runs the same campaign with 20 kills. Exit status: 0 if every check held.

What a campaign does
--------------------
1. One uninterrupted run of the child (a tiny BERT with dropout 0.2, 22 rows, batch 4, 3 epochs =
   18 optimizer steps, ``save_steps=1``) gives the reference result: every parameter, every Adam
   moment and the logged (loss, learning rate) of every step. Its event timestamps give the
   durations the kills are drawn from: start-up (``train()`` entered until ``on_train_begin``,
   i.e. ``remove_staging`` + ``latest_checkpoint`` + loading), one step, one save.
2. Then, until ``--kills`` kills: launch the child on the campaign's output folder (it resumes
   with ``resume_from_checkpoint=True`` when a ``checkpoint-N`` exists), and SIGKILL it at a moment
   drawn with a seeded ``random.Random``:

   - 60 %: inside the save of the 1st-3rd step after the resume: ``uniform(0, 1.1 x save time)``
     after the child's ``on_step_end`` event of that step (with ``save_steps=1`` the Trainer logs
     and saves right after ``on_step_end``, and fires ``on_save`` when the save returned);
   - 25 %: in a training step: ``uniform(0, 1.1 x step time)`` after ``on_train_begin`` or after
     the ``on_save`` of one of the next two steps;
   - 15 %: while the child starts and resumes: ``uniform(0, 1.1 x start-up)`` after ``train()`` is
     entered (``remove_staging`` of the previous kill's leftovers, verification, loading).

   The child stamps each event with ``time.monotonic()`` (one clock for all processes on Linux),
   so the parent's reading latency does not shift the kill; how late a kill still was is reported.
3. After each kill: every committed ``checkpoint-N`` verifies (``verify_checkpoint``: manifest,
   sizes, SHA-256), the newest one is never older than before the launch, and the step the child
   resumed from (``on_train_begin``) was the newest committed checkpoint. ``.staging-*`` folders may
   be left; where the kill landed is read from the child's last event and the folder: a staging
   folder named with the child's pid means the kill hit while the checkpoint was written, hashed or
   fsync-ed; a ``checkpoint-N`` without the ``on_save`` event means after the rename.
4. A launch that was not killed (the drawn moment lay past the end) must exit 0, and its result
   must equal the reference (``torch.equal`` for every tensor, ``==`` for the logs), and without
   ``--save-total-limit`` the folder must hold checkpoint-1 .. checkpoint-18; the campaign then
   starts over in a fresh folder (a new cycle). After the last kill the child is run to the end,
   once more resuming (with ``--final-spawn`` in a fresh interpreter), and compared likewise.

Speed: importing torch + transformers + datasets takes 5-8 s, so by default the children are
forked from a server process that imported everything once (``--serve``); each fork runs the
child from ``Trainer(...)`` on, exactly as a fresh interpreter would (the Trainer seeds every RNG
itself). ``--spawn`` starts a fresh interpreter per launch instead (``subprocess.Popen``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROWS, BATCH, EPOCHS = 22, 4, 3  # 6 batches per epoch (the last of 2 rows): 18 optimizer steps
MAX_STEPS = EPOCHS * -(-ROWS // BATCH)
LAUNCH_TIMEOUT = 180.0  # seconds one launch may take before the campaign gives up on it

# Where a kill landed, from the child's last event and the output folder.
STARTUP, STEP = "start-up/resume", "training step"
SAVE_PROLOGUE, SAVE_STAGING, SAVE_COMMITTED = "save: before staging", "save: staging written/fsynced", "save: after rename"
INSIDE_SAVE = (SAVE_PROLOGUE, SAVE_STAGING, SAVE_COMMITTED)


# ---- the child: trains, resuming from the newest checkpoint, and writes its result -----------------


def _emit(name: str, arg: int = 0) -> None:
    # One write(2) per line (atomic on a pipe), unbuffered: a kill right after it cannot lose it.
    os.write(1, f"EV {os.getpid()} {name} {arg} {time.monotonic():.6f}\n".encode())


def _import_all() -> None:
    """Everything the child needs (done once by the fork server)."""
    import torch

    torch.set_num_threads(1)
    import datasets  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import BertForSequenceClassification  # noqa: F401
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar

    import trainkit  # noqa: F401
    import trainkit.checkpoint  # noqa: F401


def _build_trainer(output_dir: str, save_total_limit: int | None) -> Any:
    import torch
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification

    from trainkit import Trainer, TrainingArguments

    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2, num_labels=3,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).float()
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({
        "input_ids": torch.randint(1, 64, (ROWS, 9), generator=g).tolist(),
        "labels": torch.randint(0, 3, (ROWS,), generator=g).tolist(),
    })
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS, learning_rate=1e-2,
        optim="adamw_torch", warmup_steps=2, logging_steps=1, save_strategy="steps", save_steps=1,
        save_total_limit=save_total_limit, report_to="none", disable_tqdm=True, seed=11,
    )
    return Trainer(model=model, args=args, train_dataset=data)


def _write_result(trainer: Any, path: str) -> None:
    from safetensors.torch import save_file

    tensors = {f"param.{n}": p.detach().clone().contiguous() for n, p in trainer.model.named_parameters()}
    for i, st in trainer.optimizer.state_dict()["state"].items():
        for k, v in st.items():
            if hasattr(v, "clone"):
                tensors[f"adam.{i}.{k}"] = v.detach().clone().contiguous()
    log = {e["step"]: [e["loss"], e["learning_rate"]] for e in trainer.state.log_history if "loss" in e}
    meta = {"log": json.dumps(log, sort_keys=True), "global_step": str(trainer.state.global_step)}
    tmp = f"{path}.{os.getpid()}.tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def child_main(cfg: dict[str, Any]) -> None:
    """Train in ``cfg["out"]`` (resuming if a checkpoint exists) and write the result to ``cfg["result"]``."""
    import warnings

    _import_all()
    from transformers import TrainerCallback

    from trainkit.checkpoint import list_checkpoints
    from trainkit.errors import CheckpointWarning

    # A committed checkpoint that fails verification would be skipped with this warning: make it fatal.
    warnings.simplefilter("error", CheckpointWarning)
    sys.stdout = open(os.devnull, "w")  # PrinterCallback prints the logs; fd 1 carries only events

    class Events(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            _emit("begin", state.global_step)

        def on_step_end(self, args, state, control, **kw):
            _emit("saving", state.global_step)  # save_steps=1: log + save follow in this step

        def on_save(self, args, state, control, **kw):
            _emit("saved", state.global_step)

    trainer = _build_trainer(cfg["out"], cfg.get("save_total_limit"))
    trainer.add_callback(Events())
    resume = True if list_checkpoints(cfg["out"]) else None
    _emit("ready")
    trainer.train(resume_from_checkpoint=resume)
    _write_result(trainer, cfg["result"])
    _emit("done", trainer.state.global_step)


def _run_child_and_exit(cfg: dict[str, Any]) -> None:
    code = 1
    try:
        child_main(cfg)
        code = 0
    except BaseException:  # noqa: BLE001 - report anything, then exit nonzero
        sys.stderr.write(f"[crash child {os.getpid()}] failed:\n{traceback.format_exc()}")
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Fork server: import once, then for each JSON line on stdin fork a child and report its exit."""
    _import_all()
    os.write(1, b"READY\n")
    for line in sys.stdin:
        cfg = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_child_and_exit(cfg)
        os.write(1, f"PID {pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(1, f"EXIT {pid} {os.waitstatus_to_exitcode(status)}\n".encode())


# ---- launching children ---------------------------------------------------------------------------


def _parse(line: bytes) -> tuple | None:
    parts = line.decode(errors="replace").split()
    if len(parts) == 5 and parts[0] == "EV":
        return ("EV", int(parts[1]), parts[2], int(parts[3]), float(parts[4]))
    if len(parts) == 3 and parts[0] == "EXIT":
        return ("EXIT", int(parts[1]), int(parts[2]))
    if len(parts) == 2 and parts[0] == "PID":
        return ("PID", int(parts[1]))
    if parts == ["READY"]:
        return ("READY",)
    return None


def _pump(stream: Any, q: queue.Queue, on_eof: Any = None) -> None:
    for line in iter(stream.readline, b""):
        item = _parse(line)
        if item is not None:
            q.put(item)
    if on_eof is not None:
        q.put(on_eof())
    else:
        q.put(("EOF",))


class Launch:
    """One running child: its pid, its event queue, and a SIGKILL that cannot hit a recycled pid."""

    def __init__(self, pid: int, q: queue.Queue, pidfd: int | None) -> None:
        self.pid, self.q, self._pidfd = pid, q, pidfd

    def kill(self) -> None:
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # already gone: its exit status tells
            pass

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class ForkServer:
    """Children forked from one interpreter that imported torch/transformers once."""

    def __init__(self, workdir: Path) -> None:
        self.stderr_path = workdir / "children.stderr"
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, cwd=str(ROOT),
        )
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, self.q), daemon=True).start()
        item = self._get(LAUNCH_TIMEOUT)
        if item != ("READY",):
            raise RuntimeError(f"fork server did not start ({item}); see {self.stderr_path}:\n{_tail(self.stderr_path)}")

    def _get(self, timeout: float) -> tuple:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return ("TIMEOUT",)

    def launch(self, cfg: dict[str, Any]) -> Launch:
        self.proc.stdin.write((json.dumps(cfg) + "\n").encode())
        self.proc.stdin.flush()
        item = self._get(60)
        if item[0] != "PID":
            raise RuntimeError(f"fork server did not fork ({item}); see {self.stderr_path}:\n{_tail(self.stderr_path)}")
        # The server reaps the child only after it wrote PID, so the pid is still ours here.
        return Launch(item[1], self.q, _pidfd(item[1]))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class Spawner:
    """A fresh interpreter per child (``subprocess.Popen``)."""

    def __init__(self, workdir: Path) -> None:
        self.stderr_path = workdir / "children.stderr"
        self._stderr = open(self.stderr_path, "ab")

    def launch(self, cfg: dict[str, Any]) -> Launch:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)], stdout=subprocess.PIPE,
            stderr=self._stderr, cwd=str(ROOT),
        )
        q: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, q, lambda: ("EXIT", proc.pid, proc.wait())), daemon=True).start()
        return Launch(proc.pid, q, None)  # Popen does not reap before wait(): the pid stays ours

    def close(self) -> None:
        self._stderr.close()


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# ---- one launch: run, maybe kill at a planned moment, collect what happened ------------------------


class Plan:
    """Kill ``delay`` seconds (child clock) after the child's event ``event`` for step ``begin + j``."""

    def __init__(self, phase: str, event: str | None, j: int, delay: float) -> None:
        self.phase, self.event, self.j, self.delay = phase, event, j, delay

    def target(self, begin: int | None) -> tuple[str, int] | None:
        if self.event is None:
            return None
        if self.event == "ready":
            return ("ready", 0)
        if begin is None:
            return None
        return (self.event, begin + self.j)


def drive(launch: Launch, plan: Plan | None, timeout: float = LAUNCH_TIMEOUT) -> dict[str, Any]:
    """Follow one child until it exits; SIGKILL it at ``plan``'s moment. Returns rc, events, lateness."""
    events: list[tuple[str, int, float]] = []
    begin, killed_late = None, None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                item = launch.q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                launch.kill()
                raise AssertionError(f"child {launch.pid} ran past {timeout:.0f} s; events so far {events[-5:]}")
            if item[0] == "EXIT" and item[1] == launch.pid:
                return {"rc": item[2], "events": events, "begin": begin, "late": killed_late, "pid": launch.pid}
            if item[0] != "EV" or item[1] != launch.pid:
                continue
            _, _, name, arg, t = item
            events.append((name, arg, t))
            if name == "begin":
                begin = arg
            if plan is not None and killed_late is None and plan.target(begin) == (name, arg):
                at = t + plan.delay
                while (left := at - time.monotonic()) > 0:
                    time.sleep(left)
                launch.kill()
                killed_late = time.monotonic() - at
    finally:
        launch.close()


# ---- checks -------------------------------------------------------------------------------------


def load_result(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def compare_results(path: Path, reference: Path) -> list[str]:
    """The differences between a child's result and the reference's (empty: bit-for-bit equal)."""
    import torch

    ours, our_meta = load_result(path)
    theirs, their_meta = load_result(reference)
    problems = []
    if ours.keys() != theirs.keys():
        problems.append(f"tensors differ: only here {sorted(ours.keys() - theirs.keys())[:5]}, only in the reference {sorted(theirs.keys() - ours.keys())[:5]}")
    problems += [f"{k} differs (max |diff| {(ours[k].double() - theirs[k].double()).abs().max().item():.3g})"
                 for k in sorted(ours.keys() & theirs.keys()) if not torch.equal(ours[k], theirs[k])]
    if our_meta != their_meta:
        mine, ref = json.loads(our_meta.get("log", "{}")), json.loads(their_meta.get("log", "{}"))
        diff = {s: (mine.get(s), ref.get(s)) for s in sorted(set(mine) | set(ref), key=int) if mine.get(s) != ref.get(s)}
        problems.append(f"metadata differs: global_step {our_meta.get('global_step')} vs {their_meta.get('global_step')}, log (ours, reference) {dict(list(diff.items())[:5])}")
    return problems


def committed(out: Path) -> list[Path]:
    from trainkit.checkpoint import list_checkpoints

    return list_checkpoints(out)


def _step_of(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def check_folder(out: Path) -> tuple[list[str], int]:
    """Every committed checkpoint-N verifies. Returns (problems, number verified)."""
    from trainkit.checkpoint import verify_checkpoint
    from trainkit.errors import CheckpointError

    problems = []
    folders = committed(out)
    for path in folders:
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            problems.append(f"committed {path.name} does not verify: {e}")
    return problems, len(folders)


def where_killed(out: Path, run: dict[str, Any]) -> str:
    events = run["events"]
    if run["begin"] is None or not events:
        return STARTUP
    name, step, _ = events[-1]
    if name != "saving":
        return STEP
    if list(out.glob(f".staging-checkpoint-{step}-{run['pid']}-*")):
        return SAVE_STAGING
    if (out / f"checkpoint-{step}").is_dir():
        return SAVE_COMMITTED
    return SAVE_PROLOGUE


# ---- the campaign -------------------------------------------------------------------------------


def measure(events: list[tuple[str, int, float]]) -> dict[str, float]:
    """Start-up, step and save durations (seconds) of an uninterrupted run's events."""
    t = {(name, arg): at for name, arg, at in events}
    saves = [t[("saved", s)] - t[("saving", s)] for s in range(1, MAX_STEPS + 1) if ("saved", s) in t and ("saving", s) in t]
    steps = [t[("saving", s + 1)] - t[("saved", s)] for s in range(1, MAX_STEPS) if ("saving", s + 1) in t and ("saved", s) in t]
    return {
        "startup": t[("begin", 0)] - t[("ready", 0)],
        "first_step": t[("saving", 1)] - t[("begin", 0)],
        "step": statistics.median(steps),
        "save": statistics.median(saves),
        "save_max": max(saves),
    }


def draw(rng: random.Random, timing: dict[str, float]) -> Plan:
    r = rng.random()
    if r < 0.60:
        j = rng.choices([1, 2, 3], weights=[5, 3, 2])[0]
        return Plan("save", "saving", j, rng.uniform(0, 1.1 * timing["save"]))
    if r < 0.85:
        j = rng.choice([0, 1, 2])
        if j == 0:
            return Plan("step", "begin", 0, rng.uniform(0, 1.1 * timing["first_step"]))
        return Plan("step", "saved", j, rng.uniform(0, 1.1 * timing["step"]))
    return Plan("startup", "ready", 0, rng.uniform(0, 1.1 * timing["startup"]))


class Violation(AssertionError):
    pass


def run_campaign(kills: int, workdir: str | os.PathLike[str], *, seed: int = 0, spawn: bool = False,
                 save_total_limit: int | None = None, strict: bool = True, final_spawn: bool = False,
                 log: Any = None) -> dict[str, Any]:
    """Run the campaign of the module docstring; returns a summary dict.

    With ``final_spawn`` the last run (resuming after the last kill) is a fresh interpreter even
    when the others are forks, so a fork server cannot hide a difference.

    With ``strict`` the first violated check raises :class:`Violation`; otherwise violations are
    collected in ``summary["violations"]`` and the campaign goes on.
    """
    say = log or (lambda msg: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict[str, Any] = {
        "kills": 0, "where": collections.Counter(), "planned": collections.Counter(), "launches": 0, "resumes": 0,
        "finished_early": 0, "cycles_compared": 0, "checkpoints_verified": 0, "staging_left": 0,
        "violations": [], "late_ms": [], "mode": "spawn" if spawn else "fork", "seed": seed,
    }

    def violation(msg: str) -> None:
        summary["violations"].append(msg)
        say(f"VIOLATION: {msg}")
        if strict:
            raise Violation(f"{msg}\n(child stderr tail: {_tail(launcher.stderr_path, 2000)})")

    launcher = Spawner(workdir) if spawn else ForkServer(workdir)
    try:
        cfg_base = {"save_total_limit": save_total_limit}
        reference = workdir / "reference.safetensors"
        ref = drive(launcher.launch({**cfg_base, "out": str(workdir / "reference"), "result": str(reference)}), None)
        if ref["rc"] != 0:
            raise Violation(f"the uninterrupted run failed (rc {ref['rc']}):\n{_tail(launcher.stderr_path)}")
        summary["timing"] = timing = measure(ref["events"])
        say("uninterrupted run: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timing.items()))
        rng = random.Random(seed)
        cycle = 0
        out = workdir / f"run-{cycle}"

        def finish(run: dict[str, Any], result: Path, what: str) -> None:
            if run["rc"] != 0:
                violation(f"{what}: the child exited with {run['rc']} instead of finishing:\n{_tail(launcher.stderr_path)}")
                return
            problems = compare_results(result, reference)
            if problems:
                violation(f"{what}: final state differs from the uninterrupted run: {problems[:5]}")
            if save_total_limit is None and [_step_of(p) for p in committed(out)] != list(range(1, MAX_STEPS + 1)):
                violation(f"{what}: expected checkpoint-1..{MAX_STEPS}, found {[p.name for p in committed(out)]}")
            summary["cycles_compared"] += 1

        while summary["kills"] < kills:
            before = [_step_of(p) for p in committed(out)]
            newest = max(before, default=0)
            plan = draw(rng, timing)
            result = workdir / f"result-{cycle}.safetensors"
            run = drive(launcher.launch({**cfg_base, "out": str(out), "result": str(result)}), plan)
            summary["launches"] += 1
            if run["begin"] is not None:
                summary["resumes"] += run["begin"] > 0
                if run["begin"] != newest:
                    violation(f"launch {summary['launches']} resumed at step {run['begin']}, but the newest committed checkpoint was {newest}")
            if run["rc"] == 0:  # the planned moment lay past the end: a complete run, resumed across the kills of this cycle
                summary["finished_early"] += 1
                finish(run, result, f"cycle {cycle}")
                say(f"cycle {cycle}: finished and compared after {summary['kills']} kills in all")
                cycle += 1
                out = workdir / f"run-{cycle}"
                continue
            if run["rc"] != -signal.SIGKILL:
                violation(f"launch {summary['launches']} exited with {run['rc']} (not killed):\n{_tail(launcher.stderr_path)}")
                continue
            summary["kills"] += 1
            where = where_killed(out, run)
            summary["where"][where] += 1
            summary["planned"][plan.phase] += 1
            summary["late_ms"].append(1000 * (run["late"] or 0.0))
            summary["staging_left"] += any(p.name.startswith(".staging-") for p in out.iterdir()) if out.is_dir() else 0
            problems, n = check_folder(out)
            summary["checkpoints_verified"] += n
            for p in problems:
                violation(f"after kill {summary['kills']} ({where}): {p}")
            after = max((_step_of(p) for p in committed(out)), default=0)
            if after < newest:
                violation(f"after kill {summary['kills']} ({where}): the newest checkpoint went back from {newest} to {after}")
            if summary["kills"] % 10 == 0:
                say(f"{summary['kills']} kills, {summary['launches']} launches, {time.monotonic() - started:.0f} s")
        # Run to the end once more (resuming) and compare.
        result = workdir / f"result-{cycle}.safetensors"
        last = Spawner(workdir) if final_spawn and not spawn else launcher
        try:
            run = drive(last.launch({**cfg_base, "out": str(out), "result": str(result)}), None)
        finally:
            if last is not launcher:
                last.close()
        summary["launches"] += 1
        if run["begin"] is not None:
            summary["resumes"] += run["begin"] > 0
        finish(run, result, f"final run (cycle {cycle})")
    finally:
        launcher.close()
    summary["seconds"] = time.monotonic() - started
    summary["inside_save"] = sum(summary["where"][w] for w in INSIDE_SAVE)
    return summary


def report(summary: dict[str, Any]) -> str:
    late = summary["late_ms"] or [0.0]
    lines = [
        f"mode {summary['mode']}, seed {summary['seed']}: {summary['kills']} kills in {summary['launches']} launches, "
        f"{summary['seconds']:.0f} s",
        "timing of the uninterrupted run: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in summary.get("timing", {}).items()),
        f"kills inside a save: {summary['inside_save']} of {summary['kills']}",
    ]
    lines += [f"  {w:32s} {summary['where'][w]}" for w in (STARTUP, STEP, *INSIDE_SAVE)]
    lines += [
        f"planned: {dict(summary['planned'])}; kill lateness median {statistics.median(late):.2f} ms, max {max(late):.2f} ms",
        f"resumes from a checkpoint: {summary['resumes']}; launches that finished (cycle compared): {summary['finished_early']}",
        f"checkpoint folders verified after kills: {summary['checkpoints_verified']}; kills that left a staging folder: {summary['staging_left']}",
        f"final states compared with the uninterrupted run: {summary['cycles_compared']}",
        f"violations: {len(summary['violations'])}",
    ]
    lines += [f"  - {v}" for v in summary["violations"][:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spawn", action="store_true", help="a fresh interpreter per launch instead of forks")
    parser.add_argument("--save-total-limit", type=int, default=None)
    parser.add_argument("--workdir", default=None, help="kept afterwards; default a temporary folder, removed")
    parser.add_argument("--final-spawn", action="store_true", help="resume the last time in a fresh interpreter")
    parser.add_argument("--strict", action="store_true", help="stop at the first violation")
    parser.add_argument("--json", default=None, help="also write the summary as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.child is not None:
        _run_child_and_exit(json.loads(args.child))
    import shutil
    import tempfile

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="trainkit-crash-"))
    try:
        summary = run_campaign(args.kills, workdir, seed=args.seed, spawn=args.spawn, save_total_limit=args.save_total_limit,
                               strict=args.strict, final_spawn=args.final_spawn, log=lambda m: print(m, flush=True))
    except Violation as e:
        print(f"FAILED: {e}", flush=True)
        return 1
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(summary), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "where": dict(summary["where"]), "planned": dict(summary["planned"])}, indent=1))
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
