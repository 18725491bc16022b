"""trainkit against a raw PyTorch loop and ``transformers.Trainer``: step time, start-up, memory, imports.

This is a benchmark, not a test: run it by hand from the repository root (see ``benchmarks/README.md``)::

    python benchmarks/compare.py [--workload tiny-bert] [--reps 5] [--steps 150] [--warmup 20]
                                 [--imports] [--interleaved] [--json out.json]

Four runners train the same seeded model on the same rows in the same order, each in its own
fresh Python process (this script re-invoked with ``--runner NAME``):

- ``raw``: the floor, a loop written by hand (AdamW, a ``LambdaLR`` linear schedule,
  ``clip_grad_norm_(model.parameters(), 1.0)``, ``zero_grad(set_to_none=True)``);
- ``functional``: trainkit's ``init_state`` + ``train_step`` over the same batches;
- ``trainkit_trainer``: ``trainkit.Trainer``;
- ``hf_trainer``: ``transformers.Trainer``, with the same ``transformers.TrainingArguments``
  object's values (trainkit converts it).

Each child reports the time of every step (``time.perf_counter`` at the end of each step, for
the Trainers from a ``TrainerCallback.on_step_end``), the time from the loop's start / the
``train()`` call to the end of step 1, the construction time (``init_state`` / ``Trainer(...)``),
its peak RSS, and its losses. The parent

1. runs one warm-up round (every runner once, discarded from the timings, two at a time on two
   cores) with dropout off and per-step logging: it is also the same-work check -- every runner's
   mean loss over the run must equal the raw loop's within 1e-5 (and every step's loss within 1e-4);
2. runs ``--reps`` repetitions, one process at a time, alternating the order (forward, reversed,
   forward, ...), with dropout at the model's defaults and no logging;
3. reduces each run to the median of its steady-state step times (after ``--warmup`` steps) and
   reports per runner the median over repetitions with [min, max], and per repetition the
   paired ratio against that repetition's raw run, with its median and [min, max];
4. prints the issue's targets next to the ratios, and a noise line (the raw loop's run-to-run
   spread, the share of wall time spent off the CPU) that flags a verdict as inconclusive.

``--imports`` adds the import time of each library after ``import torch`` (fresh processes,
alternating). ``--interleaved`` adds a cross-check robust to slow drifts in machine speed:
``--reps`` processes in which every runner's steps alternate one by one with the steps of a raw
loop on an identical model (for the Trainers, the raw step runs inside ``on_step_end`` and is
excluded from the Trainer's step), reporting the median per-pair ratio.

Threads are fixed to one (``OMP_NUM_THREADS=MKL_NUM_THREADS=1`` in each child's environment,
``torch.set_num_threads``), so the figures measure the Python-side cost of a step, not thread
scheduling on a small machine.

A workload is one entry of ``WORKLOADS`` (a :class:`Workload`: model, rows, batch size); add one
there and every runner, figure and check applies to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNNERS = ("raw", "functional", "trainkit_trainer", "hf_trainer")
LOOPS = ("raw", "functional")  # the runners that iterate pre-collated batches themselves
TRAINERS = ("trainkit_trainer", "hf_trainer")
LOSS_TOL = 1e-5  # mean loss over the run, against the raw loop's
STEP_LOSS_TOL = 1e-4  # every step's loss, against the raw loop's
RESULT_MARK = "COMPARE_RESULT "  # the child's JSON line (transformers prints dicts to stdout too)

# The optimisation, fixed so figures are comparable between runs and machines. These are what
# transformers.TrainingArguments gives for the arguments below (max_grad_norm 1.0, linear
# schedule without warm-up, AdamW betas (0.9, 0.999), eps 1e-8, weight decay 0.0).
LR = 5e-5
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.0
SEED = 42  # TrainingArguments(seed=): the Trainers' data order and the functional state's seed
MODEL_SEED = 0
DATA_SEED = 1234

# The issue's targets, printed next to the measured ratios (a missed target is reported, not an
# exit status: on a shared machine it can be noise).
TARGET_FUNCTIONAL_STEP = 1.03
TARGET_TRAINER_STEP = 1.05
ISSUE_HF_TRAINER_STEP = 1.24
TARGET_FIRST_STEP_S = 0.030
ISSUE_HF_FIRST_STEP_S = 0.200
TARGET_RSS = 1.05
TARGET_IMPORT_S = 0.15

IMPORTS = {  # what --imports measures, each after `import torch`, in a fresh process
    "import trainkit": "import trainkit",
    "from trainkit import Trainer": "from trainkit import Trainer",
    "from transformers import Trainer": "from transformers import Trainer",
}

_THREADS = 1  # overridden by --threads, passed to children through the environment


# ---------------------------------------------------------------------------------------------
# Workloads.


@dataclass(frozen=True)
class Workload:
    """A model and its rows: everything a runner needs that is not the runner itself.

    ``build_model(dropout)`` returns a float32 ``nn.Module`` whose forward takes the collated
    batch and returns an output with ``loss`` (seeded by the caller); ``rows(n)`` returns ``n``
    fixed-length rows as a dict of columns (Python lists), ready for ``datasets.Dataset.from_dict``
    and ``transformers.default_data_collator``.
    """

    name: str
    description: str
    batch_size: int
    build_model: Callable[[bool], Any]
    rows: Callable[[int], dict[str, list]]


def _tiny_bert_model(dropout: bool) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    no_dropout = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = BertConfig(
        vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=2, **no_dropout,
    )
    return BertForSequenceClassification(config)


def _tiny_bert_rows(n: int) -> dict[str, list]:
    import torch

    gen = torch.Generator().manual_seed(DATA_SEED)
    return {
        "input_ids": torch.randint(0, 1000, (n, 32), generator=gen).tolist(),
        "attention_mask": torch.ones(n, 32, dtype=torch.long).tolist(),
        "labels": torch.randint(0, 2, (n,), generator=gen).tolist(),
    }


WORKLOADS = {
    "tiny-bert": Workload(
        name="tiny-bert",
        description="BertForSequenceClassification (vocab 1000, hidden 32, 2 layers, 2 heads, intermediate 64), "
        "batch 16 x seq 32, float32",
        batch_size=16,
        build_model=_tiny_bert_model,
        rows=_tiny_bert_rows,
    ),
}


# ---------------------------------------------------------------------------------------------
# Child side: one runner, one process.


def _fix_threads() -> None:
    import torch

    torch.set_num_threads(_THREADS)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def _linear_schedule(total_steps: int) -> Callable[[int], float]:
    """transformers' ``linear`` schedule without warm-up (``get_linear_schedule_with_warmup``).

    The raw loop gives it to ``LambdaLR`` (multiplier ``schedule(k)`` for update k after k
    ``sched.step()`` calls), the functional loop to ``init_state(schedule=)`` (``schedule(state.step)``),
    so both use the learning rate the Trainers use at every step.
    """

    def linear(step: int) -> float:
        return max(0.0, float(total_steps - step) / float(max(1, total_steps)))

    return linear


def _data_order(n: int) -> Any:
    """The Trainers' order of ``n`` rows in epoch 0: a ``randperm`` from a CPU generator seeded with
    ``args.seed + epoch`` (accelerate's ``SeedableRandomSampler``; ``trainkit.data.data_order``).

    Inlined so the raw child never imports trainkit; the functional child asserts it equals
    ``trainkit.data.data_order``, and the same-work check would see any other order in the losses.
    """
    import torch

    return torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(SEED + 0))


def _build(workload: Workload, total_steps: int, dropout: bool) -> tuple[Any, Any]:
    """The seeded model and the ``datasets.Dataset`` of ``total_steps`` batches of rows (every runner)."""
    import datasets
    import torch

    datasets.disable_progress_bars()
    torch.manual_seed(MODEL_SEED)
    model = workload.build_model(dropout).to(torch.float32)
    dataset = datasets.Dataset.from_dict(workload.rows(total_steps * workload.batch_size))
    return model, dataset


def _loop_batches(workload: Workload, dataset: Any) -> list[dict]:
    """The batches the Trainers see, collated before the loop: rows in the Trainers' order, batched by
    ``batch_size``, through ``transformers.default_data_collator`` (the Trainers' default collator)."""
    from transformers import default_data_collator

    order = _data_order(len(dataset)).tolist()
    batches = []
    for start in range(0, len(order), workload.batch_size):
        columns = dataset[order[start : start + workload.batch_size]]
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        batches.append(default_data_collator(rows))
    return batches


def _adamw(model: Any) -> Any:
    import torch

    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def _raw_stepper(model: Any, schedule: Callable[[int], float]) -> Callable:
    """The floor: the loop a user writes by hand (``model.train()`` once, then per batch)."""
    import torch

    opt = _adamw(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()

    def step(batch: dict) -> Any:
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    return step


def _functional_stepper(model: Any, schedule: Callable[[int], float]) -> Callable:
    """trainkit's functional step: ``train_step`` consumes the state and returns its successor."""
    from trainkit import init_state, train_step

    state = init_state(model, _adamw(model), schedule=schedule, seed=SEED)

    def step(batch: dict) -> Any:
        nonlocal state
        state, out = train_step(state, batch, max_grad_norm=MAX_GRAD_NORM)
        return out.loss

    step.progress = lambda: state.progress
    return step


_STEPPERS = {"raw": _raw_stepper, "functional": _functional_stepper}


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _durations(start: float, ends: list[float], resumes: list[float] | None = None) -> list[float]:
    """Per-step durations from step-end timestamps: step 1 from ``start``, step k from end k-1 (or, when
    something ran at the end of step k-1 that is not part of the run, from ``resumes[k-1]``, its end)."""
    resumes = ends if resumes is None else resumes
    return [b - a for a, b in zip([start, *resumes[:-1]], ends)]


def run_loop(runner: str, workload: Workload, total: int, dropout: bool) -> dict:
    """``raw`` or ``functional``: construct, then iterate the pre-collated batches."""
    model, dataset = _build(workload, total, dropout)
    batches = _loop_batches(workload, dataset)
    if runner == "functional":
        from trainkit.data import data_order

        assert data_order(SEED, 0, len(dataset)).equal(_data_order(len(dataset))), "trainkit.data.data_order moved"
    t0 = time.perf_counter()
    step = _STEPPERS[runner](model, _linear_schedule(total))
    construct = time.perf_counter() - t0
    losses, ends, cpu_ends = [], [], []
    cpu_start, start = time.thread_time(), time.perf_counter()
    for batch in batches:
        losses.append(step(batch).detach())
        ends.append(time.perf_counter())
        cpu_ends.append(time.thread_time())
    if runner == "functional":
        assert step.progress().step == total, step.progress()
    losses = [float(x) for x in losses]
    return {
        "times": _durations(start, ends),
        "cpu_times": _durations(cpu_start, cpu_ends),
        "construct_s": construct,
        "losses": losses,
        "mean_loss": sum(losses) / len(losses),
    }


def run_trainer(runner: str, workload: Workload, total: int, dropout: bool, log_every_step: bool,
                between: Callable[[int], None] | None = None) -> dict:
    """``trainkit_trainer`` or ``hf_trainer``: the same ``transformers.TrainingArguments``, a clock callback.

    ``between(i)``, if given, runs at the end of step i+1 (inside ``on_step_end``) and is excluded
    from the Trainer's step times (``--interleaved`` runs a raw-loop step there).
    """
    import transformers
    from transformers import TrainerCallback

    if runner == "trainkit_trainer":
        from trainkit import Trainer
    else:
        from transformers import Trainer

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []
            self.resumes: list[float] = []
            self.cpu_resumes: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.thread_time())
            if between is not None:
                between(len(self.ends) - 1)
            self.cpu_resumes.append(time.thread_time())
            self.resumes.append(time.perf_counter())

    model, dataset = _build(workload, total, dropout)
    with tempfile.TemporaryDirectory(prefix="trainkit-compare-") as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp, optim="adamw_torch", learning_rate=LR, per_device_train_batch_size=workload.batch_size,
            max_steps=total, logging_strategy="steps" if log_every_step else "no", logging_steps=1,
            save_strategy="no", report_to="none", disable_tqdm=True, seed=SEED, dataloader_pin_memory=False,
        )
        clock = StepClock()
        t0 = time.perf_counter()
        trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[clock])
        construct = time.perf_counter() - t0
        cpu_start, start = time.thread_time(), time.perf_counter()
        output = trainer.train()
    assert output.global_step == total == len(clock.ends), (output.global_step, total, len(clock.ends))
    logged = [e for e in trainer.state.log_history if "loss" in e and "train_loss" not in e]
    return {
        "times": _durations(start, clock.ends, clock.resumes),
        "cpu_times": _durations(cpu_start, clock.cpu_ends, clock.cpu_resumes),
        "construct_s": construct,
        "losses": [e["loss"] for e in sorted(logged, key=lambda e: e["step"])] if log_every_step else [],
        "mean_loss": output.training_loss,  # the Trainer's own mean over the run (sum of losses / steps)
    }


def _raw_twin(workload: Workload, total: int) -> tuple[Callable, list[dict]]:
    model, dataset = _build(workload, total, dropout=True)
    return _raw_stepper(model, _linear_schedule(total)), _loop_batches(workload, dataset)


def run_interleaved(workload: Workload, total: int, reverse: bool) -> dict:
    """The ``--interleaved`` cross-check, in this one process: every runner's steps alternate with the
    steps of a raw loop of its own (an identical model on the same batches), so each pair of steps is
    measured within ~30 ms and slow drifts in the machine's speed cancel.

    ``functional``: raw and functional steps alternate, who goes first alternating. Trainers: the
    raw step runs at the end of each Trainer step (in ``on_step_end``), excluded from the Trainer's
    step interval. Returns ``{runner: {"raw": [...], "runner": [...]}}`` step times (s).
    """
    out: dict[str, dict[str, list[float]]] = {}
    phases = ("functional", *TRAINERS)
    for runner in phases[::-1] if reverse else phases:
        raw, batches = _raw_twin(workload, total)
        raw_times: list[float] = []

        def timed_raw(i: int) -> None:
            t0 = time.perf_counter()
            raw(batches[i])
            raw_times.append(time.perf_counter() - t0)

        if runner == "functional":
            model, dataset = _build(workload, total, dropout=True)
            step = _functional_stepper(model, _linear_schedule(total))
            times = []
            for i in range(total):
                if i % 2 == 0:
                    timed_raw(i)
                t0 = time.perf_counter()
                step(batches[i])
                times.append(time.perf_counter() - t0)
                if i % 2 == 1:
                    timed_raw(i)
        else:
            times = run_trainer(runner, workload, total, dropout=True, log_every_step=False, between=timed_raw)["times"]
        out[runner] = {"raw": raw_times, "runner": times}
    return out


def run_import(statement: str) -> dict:
    """The time of one import statement after ``import torch`` (not timed), in this fresh process."""
    import torch  # noqa: F401

    t0 = time.perf_counter()
    exec(statement, {})
    return {"import_s": time.perf_counter() - t0}


def child_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    if args.runner == "import":
        result = run_import(IMPORTS[args.statement])  # torch's threads are irrelevant to an import
    else:
        import torch

        _fix_threads()
        workload = WORKLOADS[args.workload]
        total = args.warmup + args.steps
        if args.runner == "interleaved":
            result = run_interleaved(workload, total, reverse=args.reverse)
        elif args.runner in LOOPS:
            result = run_loop(args.runner, workload, total, dropout=not args.no_dropout)
        else:
            result = run_trainer(args.runner, workload, total, dropout=not args.no_dropout, log_every_step=args.no_dropout)
        result["threads"] = torch.get_num_threads()
    result["peak_rss_mib"] = _peak_rss_mib()
    print(RESULT_MARK + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# Parent side: orchestration and the report.


def _start(args: argparse.Namespace, runner: str, *, dropout: bool = True, statement: str | None = None,
           reverse: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--runner", runner, "--workload", args.workload,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    if not dropout:
        cmd.append("--no-dropout")
    if statement is not None:
        cmd += ["--statement", statement]
    if reverse:
        cmd.append("--reverse")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    if args.pycache:  # every child reads (and the first ones write) bytecode there, none in the tree
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = args.pycache
    return subprocess.Popen(cmd, env=env, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(runner: str, proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"runner {runner!r} failed with exit code {proc.returncode}")
    line = next(ln for ln in reversed(stdout.splitlines()) if ln.startswith(RESULT_MARK))
    return json.loads(line[len(RESULT_MARK) :])


def spawn(args: argparse.Namespace, runner: str, **kw: Any) -> dict:
    """One runner in a fresh process, waited for (nothing else of ours runs meanwhile)."""
    return _result(runner, _start(args, runner, **kw))


def _alternating(names: tuple[str, ...], rep: int) -> tuple[str, ...]:
    return names if rep % 2 == 0 else names[::-1]


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def _s(seconds: float) -> str:
    return f"{seconds:.3f}"


def _mib(value: float) -> str:
    return f"{value:,.1f}"


def _ratio(value: float) -> str:
    return f"{value:.4f}"


def _span(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}, {fmt(max(values))}]"


def _verdict(value: float, target: float) -> str:
    return "MET" if value <= target else "NOT MET"


def _figures(result: dict, warmup: int) -> dict[str, float]:
    """One run reduced: median steady-state step (wall, cpu), first step, construction, peak RSS."""
    return {
        "step": statistics.median(result["times"][warmup:]),
        "cpu": statistics.median(result["cpu_times"][warmup:]),
        "first": result["times"][0],
        "construct": result["construct_s"],
        "rss": result["peak_rss_mib"],
    }


def _check(results: dict[str, dict]) -> tuple[bool, list[str]]:
    """Same work: every runner's mean loss equals the raw loop's within LOSS_TOL (dropout off).

    The mean alone is a weak test on this workload (random labels keep every loss near ln 2: another
    data order moves the mean by only ~5e-5), so every step's loss must also match within
    STEP_LOSS_TOL (another order moves single steps by ~1e-2).
    """
    ok, lines = True, []
    ref = results["raw"]
    for name in RUNNERS:
        diff = abs(results[name]["mean_loss"] - ref["mean_loss"])
        steps = results[name]["losses"]
        same_length = len(steps) == len(ref["losses"])
        step_diff = max(abs(a - b) for a, b in zip(steps, ref["losses"])) if steps and same_length else float("inf")
        good = diff <= LOSS_TOL and step_diff <= STEP_LOSS_TOL
        ok &= good
        lines.append(
            f"  {name:<18} mean loss {results[name]['mean_loss']:.8f}  |diff| {diff:.2e}  max per-step |diff| "
            f"{step_diff:.2e} ({len(steps)} steps)  -> {'OK' if good else 'FAIL'}"
        )
    return ok, lines


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for pkg in ("torch", "transformers", "accelerate", "datasets"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


def parent_main(args: argparse.Namespace) -> int:
    # Bytecode: the children share a private cache (PYTHONPYCACHEPREFIX), filled by the warm-up
    # round, so no measured run compiles a module from source (PYTHONDONTWRITEBYTECODE=1 or a fresh
    # checkout would otherwise make every child compile trainkit) and nothing is written in the tree.
    with tempfile.TemporaryDirectory(prefix="trainkit-compare-pycache-") as pycache:
        args.pycache = pycache
        return _parent_main(args)


def _parent_main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    workload = WORKLOADS[args.workload]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"trainkit compare: workload {workload.name}: {workload.description}")
    print(f"  AdamW lr {LR:g} + clip {MAX_GRAD_NORM} + linear schedule, {args.threads} thread(s); {_versions()}")
    print(
        f"  {args.reps} reps x {args.steps} timed steps (+{args.warmup} warm-up steps each), one discarded warm-up round "
        f"(= the same-work check), fresh process per run, order alternating; {os.cpu_count()} CPUs, load average "
        f"at start {load}",
        flush=True,
    )

    # 1. The warm-up round, discarded from the timings; run with dropout off (and per-step logging
    #    in the Trainers) it is also the same-work check. Nothing of it is timed, so its runs share
    #    the cores (as many at a time as there are cores for their threads).
    check: dict[str, dict] = {}
    at_once = max(1, (os.cpu_count() or 1) // args.threads)
    for first in range(0, len(RUNNERS), at_once):
        procs = {name: _start(args, name, dropout=False) for name in RUNNERS[first : first + at_once]}
        check.update({name: _result(name, proc) for name, proc in procs.items()})
    check_ok, check_lines = _check(check)

    # 2. Alternating repetitions, one process at a time.
    per_rep: list[dict[str, dict[str, float]]] = []
    for rep in range(args.reps):
        order = _alternating(RUNNERS, rep)
        results = {name: spawn(args, name) for name in order}
        figs = {name: _figures(results[name], args.warmup) for name in RUNNERS}
        per_rep.append(figs)
        print(
            f"  rep {rep + 1}/{args.reps} ({order[0]} first): step us "
            + ", ".join(f"{n} {_us(figs[n]['step'])}" + ("" if n == "raw" else f" ({figs[n]['step'] / figs['raw']['step']:.3f})") for n in RUNNERS),
            flush=True,
        )

    main_part = time.perf_counter() - started  # the default run ends here

    # 3. Optional: import times, each statement in fresh processes, alternating.
    imports = None
    if args.imports:
        names = tuple(IMPORTS)
        spawn_import = lambda stmt: spawn(args, "import", statement=stmt)["import_s"]  # noqa: E731
        for stmt in names:  # warm-up round (bytecode caches, page cache), discarded
            spawn_import(stmt)
        imports = {stmt: [] for stmt in names}
        for rep in range(args.reps):
            for stmt in _alternating(names, rep):
                imports[stmt].append(spawn_import(stmt))

    # 4. Optional: the interleaved cross-check (one process per rep; phase order alternating).
    interleaved = None
    if args.interleaved:
        interleaved = {name: [] for name in RUNNERS[1:]}
        for rep in range(args.reps):
            result = spawn(args, "interleaved", reverse=rep % 2 == 1)
            for name in interleaved:
                raw_t, run_t = result[name]["raw"][args.warmup :], result[name]["runner"][args.warmup :]
                interleaved[name].append(
                    {
                        "raw": statistics.median(raw_t),
                        "runner": statistics.median(run_t),
                        "pair_ratio": statistics.median(t / r for t, r in zip(run_t, raw_t)),
                    }
                )

    # ---- the report ----
    series = {name: {key: [fig[name][key] for fig in per_rep] for key in per_rep[0][name]} for name in RUNNERS}
    ratios = {
        name: {key: [fig[name][key] / fig["raw"][key] for fig in per_rep] for key in ("step", "cpu", "rss")}
        for name in RUNNERS
    }
    med = lambda values: statistics.median(values)  # noqa: E731
    col, label = 27, 30
    print()
    print("median [min, max] over reps (a run's step time: the median of its steady-state steps)")
    print(f"{'':<{label}}" + "".join(f"{name:>{col}}" for name in RUNNERS))
    rows = [
        ("step, us (wall)", lambda n: _span(series[n]["step"], _us)),
        ("step / raw (paired, wall)", lambda n: "1" if n == "raw" else _span(ratios[n]["step"], _ratio)),
        ("step, us (cpu)", lambda n: _span(series[n]["cpu"], _us)),
        ("step / raw (paired, cpu)", lambda n: "1" if n == "raw" else _span(ratios[n]["cpu"], _ratio)),
        ("start to end of step 1, ms", lambda n: _span(series[n]["first"], _ms)),
        ("construction, ms", lambda n: _span(series[n]["construct"], _ms)),
        ("peak RSS, MiB", lambda n: _span(series[n]["rss"], _mib)),
        ("peak RSS / raw (paired)", lambda n: "1" if n == "raw" else _span(ratios[n]["rss"], _ratio)),
    ]
    for name, cell in rows:
        print(f"{name:<{label}}" + "".join(f"{cell(n):>{col}}" for n in RUNNERS))
    print(
        "  start: the loop's first batch (raw, functional) / the train() call (Trainers, which also build the "
        "optimizer, schedule and data loader there); construction: AdamW + LambdaLR (raw), AdamW + init_state "
        "(functional), Trainer(...) (Trainers)"
    )
    print()
    for name in RUNNERS[1:]:
        print(f"paired step ratio {name}/raw per rep (wall): " + ", ".join(_ratio(r) for r in ratios[name]["step"]))
    if imports:
        print()
        print(f"import time after `import torch`, s (fresh processes, {args.reps} reps, alternating; median [min, max])")
        for stmt, values in imports.items():
            print(f"  {stmt:<34} {_span(values, _s)}")

    print()
    print("targets (from the issue)                           measured (median)   verdict")
    tk_step, fn_step, hf_step = (med(ratios[n]["step"]) for n in ("trainkit_trainer", "functional", "hf_trainer"))
    inter = {n: med([m["pair_ratio"] for m in v]) for n, v in interleaved.items()} if interleaved else {}

    def also(name: str, target: float | None) -> list[str]:
        if name not in inter:
            return []
        return [f"interleaved {_ratio(inter[name])}" + (f" {_verdict(inter[name], target)}" if target else "")]

    hf_note = ", ".join([f"{_ratio(hf_step)} here", *also("hf_trainer", None), f"{ISSUE_HF_TRAINER_STEP} in the issue"])
    targets = [
        (f"functional step / raw <= {TARGET_FUNCTIONAL_STEP}", _ratio(fn_step), _verdict(fn_step, TARGET_FUNCTIONAL_STEP),
         "; ".join(also("functional", TARGET_FUNCTIONAL_STEP))),
        (f"trainkit.Trainer step / raw <= {TARGET_TRAINER_STEP}", _ratio(tk_step), _verdict(tk_step, TARGET_TRAINER_STEP),
         "; ".join([*also("trainkit_trainer", TARGET_TRAINER_STEP), f"transformers.Trainer: {hf_note}"])),
    ]
    tk_first, hf_first = med(series["trainkit_trainer"]["first"]), med(series["hf_trainer"]["first"])
    targets.append(
        (f"trainkit.Trainer train() to step 1 <= {TARGET_FIRST_STEP_S * 1e3:.0f} ms", f"{_ms(tk_first)} ms",
         _verdict(tk_first, TARGET_FIRST_STEP_S), f"transformers.Trainer: {_ms(hf_first)} ms here, ~{ISSUE_HF_FIRST_STEP_S * 1e3:.0f} ms in the issue")
    )
    for name, title in (("functional", "functional"), ("trainkit_trainer", "trainkit.Trainer")):
        value = med(ratios[name]["rss"])
        extra = f"transformers.Trainer: {_ratio(med(ratios['hf_trainer']['rss']))} here" if name == "trainkit_trainer" else ""
        targets.append((f"{title} peak RSS / raw <= {TARGET_RSS}", _ratio(value), _verdict(value, TARGET_RSS), extra))
    if imports:
        value = med(imports["import trainkit"])
        targets.append(
            (f"import trainkit after torch <= {TARGET_IMPORT_S} s", f"{_s(value)} s", _verdict(value, TARGET_IMPORT_S),
             f"from transformers import Trainer: {_s(med(imports['from transformers import Trainer']))} s")
        )
    else:
        targets.append((f"import trainkit after torch <= {TARGET_IMPORT_S} s", "(not run)", "", "add --imports"))
    for text, value, verdict, note in targets:
        print(f"  {text:<49}{value:>17}   {verdict:<8}{('  ' + note) if note else ''}")

    # How far this machine resolves a ratio: the raw loop run to run, and the share of wall time
    # the runs spent off the CPU (waiting for a core other processes held).
    raw_spread = max(series["raw"]["step"]) / min(series["raw"]["step"]) - 1
    off_cpu = med([fig[n]["step"] / fig[n]["cpu"] - 1 for fig in per_rep for n in RUNNERS])
    margin = TARGET_FUNCTIONAL_STEP - 1
    print(
        f"noise: raw loop run-to-run spread {raw_spread:.1%} (max/min - 1), wall time off-CPU {off_cpu:.1%} "
        f"(median over runs), load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if raw_spread > margin or off_cpu > 0.05 or args.reps < 3:
        why = (f"{args.reps} rep(s) cannot show the run-to-run noise" if args.reps < 3 else
               f"the machine's noise is larger than the {margin:.0%} margin being tested")
        print(
            f"  {why}: treat the fresh-process step-ratio verdicts as inconclusive; rerun on a quiet machine"
            + (" and read the interleaved figures" if args.interleaved else ", or add --interleaved")
        )

    if interleaved:
        print()
        print(
            f"interleaved ({args.reps} processes; in each, every runner's steps alternate with a raw loop's steps on an "
            f"identical model, the Trainers' raw step run inside on_step_end and excluded from their step): median "
            f"[min, max] over processes"
        )
        print(f"  {'':<18}{'raw, us':>26}{'runner, us':>26}{'overhead, us/step':>26}{'median per-pair ratio':>28}   per process")
        for name, runs in interleaved.items():
            pair = [m["pair_ratio"] for m in runs]
            print(
                f"  {name:<18}{_span([m['raw'] for m in runs], _us):>26}{_span([m['runner'] for m in runs], _us):>26}"
                f"{_span([m['runner'] - m['raw'] for m in runs], _us):>26}{_span(pair, _ratio):>28}   "
                + ", ".join(_ratio(r) for r in pair)
            )

    print()
    print(f"same-work check (the warm-up round: dropout off, {args.warmup + args.steps} steps, fresh processes; "
          f"mean loss vs raw within {LOSS_TOL:.0e}, every step's within {STEP_LOSS_TOL:.0e}): {'OK' if check_ok else 'FAIL'}")
    for line in check_lines:
        print(line)
    threads = {r["threads"] for r in check.values()}
    print(
        f"threads per child: {sorted(threads)}; wall time: {time.perf_counter() - started:.0f} s "
        f"(check/warm-up round and reps: {main_part:.0f} s)"
    )

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "versions": _versions(),
                    "args": {k: v for k, v in vars(args).items() if k not in ("runner", "no_dropout", "statement", "pycache")},
                    "per_rep": per_rep,
                    "ratios": ratios,
                    "imports": imports,
                    "interleaved": interleaved,
                    "raw_spread": raw_spread,
                    "off_cpu": off_cpu,
                    "check": {n: {"mean_loss": r["mean_loss"], "losses": r["losses"]} for n, r in check.items()},
                    "check_ok": check_ok,
                },
                indent=2,
            )
        )
    return 0 if check_ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="tiny-bert", help="the model and data (default tiny-bert)")
    parser.add_argument("--reps", type=int, default=5, help="measured repetitions (default 5)")
    parser.add_argument("--steps", type=int, default=150, help="timed steps per run (default 150)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up steps per run, >= 1 (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL/torch threads per child (default 1)")
    parser.add_argument("--imports", action="store_true", help="also measure import times after torch (fresh processes)")
    parser.add_argument(
        "--interleaved", action="store_true",
        help="also run --reps processes in which every runner's steps alternate with a raw loop's steps (a "
        "cross-check robust to slow drifts in machine speed)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    parser.add_argument("--runner", choices=(*RUNNERS, "interleaved", "import"), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--reverse", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-dropout", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--statement", choices=tuple(IMPORTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.pycache = None
    if args.reps < 1 or args.steps < 1 or args.warmup < 1 or args.threads < 1:
        parser.error("--reps, --steps, --warmup and --threads must be >= 1")
    global _THREADS
    _THREADS = args.threads
    if args.runner:
        child_main(args)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
