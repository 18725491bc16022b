"""Eager against ``torch.compile``, and fp32 against bf16 autocast, on ``compare.py``'s workloads.

This is a benchmark, not a test: run it by hand from the repository root (see ``benchmarks/README.md``)::

    python benchmarks/compile_precision.py [--workload small-bert] [--steps 20] [--warmup 5]
                                           [--runners functional,trainkit_trainer,hf_trainer]
                                           [--modes eager,compile,bf16] [--device auto] [--json out.json]

Every (runner, mode) pair trains the workload once in a fresh process, with dropout off, on the
same batches in the same order as ``compare.py`` (its runners, reused):

- ``eager``: fp32, no compilation (the reference of its runner);
- ``compile``: the functional loop through ``init_state(model, optimizer, ..., compile=True)``
  (``--compile-options '{"mode": ...}'`` passes ``torch.compile`` keyword arguments instead), the
  Trainers through ``TrainingArguments(torch_compile=True)``. Each process gets its own empty
  inductor cache (``TORCHINDUCTOR_CACHE_DIR``), so the compile time is a cold compile;
- ``bf16``: bf16 autocast (``init_state(precision="bf16")``; ``TrainingArguments(bf16=True)``).

Figures per run: step 1 (which holds the compilation), the compile time (the warm-up steps' time
above the steady-state step, i.e. step 1 plus any recompilation), the steady-state step (median
after ``--warmup``), its ratio to the runner's eager step, and the largest per-step loss difference
from the runner's eager run: within 1e-4 for ``compile`` (checked; exit status 1 otherwise), and
reported only for ``bf16`` (no target).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import compare  # noqa: E402  (this directory: the workloads, runners and constants)

RUNNERS = ("functional", "trainkit_trainer", "hf_trainer")
MODES = ("eager", "compile", "bf16")
COMPILE_TOL = 1e-4  # compiled vs eager, every step's loss


def child(args: argparse.Namespace) -> dict:
    import torch

    compare._THREADS = args.threads
    compare._fix_threads()
    compare._DEVICE = compare._resolve_device(args.device)
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo, untimed (see compare.py)
    workload = compare.WORKLOADS[args.workload]
    total = args.warmup + args.steps
    if args.runner == "functional":
        options: dict[str, Any] = {}
        if args.mode == "compile":
            options["compile"] = json.loads(args.compile_options) if args.compile_options else True
        elif args.mode == "bf16":
            options["precision"] = "bf16"
        result = compare.run_loop("functional", workload, total, dropout=False, **options)
    else:
        overrides: dict[str, Any] = {}
        if args.mode == "compile":
            overrides["torch_compile"] = True
            for key, value in (json.loads(args.compile_options) if args.compile_options else {}).items():
                overrides[f"torch_compile_{key}"] = value  # backend, mode
        elif args.mode == "bf16":
            overrides["bf16"] = True
        result = compare.run_trainer(args.runner, workload, total, dropout=False, log_every_step=True, **overrides)
    result["peak_rss_mib"] = compare._peak_rss_mib()
    result["device"] = compare._DEVICE
    return result


def spawn(args: argparse.Namespace, runner: str, mode: str, pycache: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--runner", runner, "--mode", mode,
           "--workload", args.workload, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--device", args.device]
    if args.compile_options:
        cmd += ["--compile-options", args.compile_options]
    with tempfile.TemporaryDirectory(prefix="trainkit-inductor-") as cache:
        args.pycache = pycache
        env = {**compare.child_env(args), "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
        proc = subprocess.Popen(cmd, env=env, cwd=str(compare.REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return compare.result_of(f"{runner}/{mode}", proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(n for n, w in compare.WORKLOADS.items() if w.kind == "train"), default="small-bert")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="steps before the timed ones, holding the compilation (default 5)")
    parser.add_argument("--runners", default=",".join(RUNNERS), help=f"comma-separated, from {','.join(RUNNERS)} (default all)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {','.join(MODES)} (default all; eager is always run)")
    parser.add_argument("--compile-options", metavar="JSON", help='torch.compile keyword arguments, e.g. \'{"mode": "max-autotune-no-cudagraphs"}\'')
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL/torch threads per child (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runner", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(compare.RESULT_MARK + json.dumps(child(args)), flush=True)
        return 0
    runners = [r for r in args.runners.split(",") if r]
    modes = ["eager", *[m for m in args.modes.split(",") if m and m != "eager"]]
    if set(runners) - set(RUNNERS) or set(modes) - set(MODES):
        parser.error(f"--runners from {RUNNERS}, --modes from {MODES}")

    started = time.perf_counter()
    workload = compare.WORKLOADS[args.workload]
    print(f"trainkit compile/precision: workload {workload.name}: {workload.description}")
    print(f"  device {args.device}; {args.threads} thread(s); {compare.versions()}; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  {args.warmup} + {args.steps} steps per run, dropout off, one fresh process per (runner, mode), cold inductor "
          f"cache; compile options: {args.compile_options or 'torch.compile defaults (inductor)'}", flush=True)
    results: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="trainkit-compare-pycache-") as pycache:
        for runner in runners:
            for mode in modes:
                t0 = time.perf_counter()
                results[runner, mode] = spawn(args, runner, mode, pycache)
                print(f"  {runner}/{mode}: {time.perf_counter() - t0:.0f} s", flush=True)

    print()
    head = ("runner", "mode", "step 1, s", "compile, s", "steady step, ms", "step / eager", "mean loss", "max |step loss - eager|", "check")
    widths = (18, 8, 11, 11, 16, 13, 12, 24, 14)
    print("".join(f"{h:>{w}}" if i > 1 else f"{h:<{w}}" for i, (h, w) in enumerate(zip(head, widths))))
    ok = True
    for (runner, mode), r in results.items():
        eager = results[runner, "eager"]
        times = r["times"]
        steady = statistics.median(times[args.warmup :])
        compile_s = sum(t - steady for t in times[: args.warmup]) if mode == "compile" else None
        ratio = steady / statistics.median(eager["times"][args.warmup :])
        diff = max(abs(a - b) for a, b in zip(r["losses"], eager["losses"]))
        if mode == "compile":
            good = diff <= COMPILE_TOL
            ok &= good
            check = f"{'OK' if good else 'FAIL'} (<= {COMPILE_TOL:.0e})"
        else:
            check = "reference" if mode == "eager" else "report only"
        cells = (runner, mode, f"{times[0]:.2f}", "" if compile_s is None else f"{compile_s:.1f}", f"{steady * 1e3:,.1f}",
                 f"{ratio:.4f}", f"{r['mean_loss']:.6f}", f"{diff:.2e}", check)
        print("".join(f"{c:>{w}}" if i > 1 else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths))))
    print("  step 1: train() / the loop's start to the end of step 1; compile: the warm-up steps' time above the steady "
          "step (step 1's compilation plus any recompilation); steady step: median after the warm-up")
    print(f"compiled matches eager (every step's loss within {COMPILE_TOL:.0e}): {'OK' if ok else 'FAIL'}; wall time "
          f"{time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "versions": compare.versions(),
                                               "results": {f"{r}/{m}": v for (r, m), v in results.items()}}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
