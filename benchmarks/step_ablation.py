"""What each per-step duty of ``train_step`` costs on an overhead-dominated workload.

A diagnostic, not a test: run it by hand from the repository root (see ``benchmarks/README.md``)::

    python benchmarks/step_ablation.py [--workload mlp] [--steps 400] [--warmup 20]

One process per variant (threads fixed as in ``compare.py``). In each, a raw-loop step and a
functional ``train_step`` alternate on twin models over the same batches (``compare.py``'s
runners), and the median per-pair ratio is reported. The variants switch off, by replacing a
private function of ``trainkit.step`` with a stub, one duty a raw loop does not have:

- ``rng``: the private random streams (``seeding._PrivateStreams``): save, seed and restore the
  generators, so dropout is a function of (seed, step, micro-batch) and resume is bitwise;
- ``count``: counting the label items (``_count_items``), which makes accumulation exact and
  feeds ``items_seen``;
- ``seed``: deriving the per-step seeds (``derive_seed``);
- ``group``: looking for a DDP/FSDP process group (``_ddp_group``).

A stubbed run trains differently (no private dropout stream, wrong item counts); it exists only
to price each duty, never to be used.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("none", "rng", "count", "seed", "group", "rng,count,seed,group")


def _stub(duties: set[str]) -> None:
    import trainkit.step as step

    class _NoStreams:
        def __init__(self, device: Any = None) -> None:
            pass

        def __enter__(self) -> Any:
            return lambda seed: None

        def __exit__(self, *exc: object) -> None:
            return None

    if "rng" in duties:
        step._PrivateStreams = _NoStreams
    if "count" in duties:
        step._count_items = lambda batch, labels, shift, samples: samples
    if "seed" in duties:
        step.derive_seed = lambda *keys: 0
    if "group" in duties:
        step._ddp_group = lambda model: None


def _child(workload_name: str, duties: set[str], steps: int, warmup: int) -> float:
    import compare

    compare._fix_threads()
    _stub(duties - {"none"})
    workload = compare.WORKLOADS[workload_name]
    runs = []
    for kind in ("raw", "functional"):
        model, dataset = compare._build(workload, steps, True)
        runs.append((compare._STEPPERS[kind](model, compare._linear_schedule(steps), workload),
                     compare._loop_batches(workload, dataset)))
    times: list[list[float]] = [[], []]
    for i in range(min(steps, len(runs[0][1]))):
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):  # alternate which runs first
            stepper, batches = runs[j]
            start = time.perf_counter()
            stepper(batches[i])
            times[j].append(time.perf_counter() - start)
    raw, functional = (t[warmup:] for t in times)
    return statistics.median(b / a for a, b in zip(raw, functional))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="mlp")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(f"RATIO {_child(args.workload, set(args.child.split(',')), args.steps, args.warmup):.4f}")
        return
    print(f"functional train_step / raw step on {args.workload!r}, median per-pair ratio, one process per variant")
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--workload", args.workload, "--steps", str(args.steps),
                              "--warmup", str(args.warmup), "--child", variant],
                             capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        ratio = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("RATIO"))
        label = "nothing switched off" if variant == "none" else f"without {variant.replace(',', ' + ')}"
        print(f"  {label:40s} {ratio}")


if __name__ == "__main__":
    main()
