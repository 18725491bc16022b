"""trainkit against a raw PyTorch loop and ``transformers.Trainer``: step time, start-up, memory, imports.

This is a benchmark, not a test: run it by hand from the repository root (see ``benchmarks/README.md``)::

    python benchmarks/compare.py [--workload tiny-bert|small-bert|mlp|tiny-gpt2|eval-heavy] [--reps 5]
                                 [--steps N] [--warmup N] [--eval-batches 2000] [--device auto|cpu|cuda]
                                 [--imports] [--interleaved] [--json out.json]

Four runners do the same work on the same seeded model and the same rows in the same order, each
in its own fresh Python process (this script re-invoked with ``--runner NAME``):

- ``raw``: the floor, a loop written by hand (AdamW, a ``LambdaLR`` linear schedule,
  ``clip_grad_norm_(model.parameters(), 1.0)``, ``zero_grad(set_to_none=True)``; gradient
  accumulation weighted by label items);
- ``functional``: trainkit's ``init_state`` + ``train_step`` over the same batches;
- ``trainkit_trainer``: ``trainkit.Trainer``;
- ``hf_trainer``: ``transformers.Trainer``, with the same ``transformers.TrainingArguments``
  object's values (trainkit converts it).

On the evaluation workload (``eval-heavy``) the runners evaluate instead of training: a hand-written
``no_grad`` loop (``raw``), ``trainkit.evaluate`` (``functional``), ``trainkit.Trainer.evaluate`` and
``transformers.Trainer.evaluate``, all with the same ``compute_metrics``.

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

A workload is one entry of ``WORKLOADS`` (a :class:`Workload`: model, rows, batch size, collator,
gradient accumulation, targets); add one there and every runner, figure and check applies to it.

On a CUDA machine (``--device auto`` finds it, or ``--device cuda``) every runner trains on the GPU
with bf16 autocast and fused AdamW, and every clock read is preceded by ``torch.cuda.synchronize()``;
see the "CUDA" section below. That path has not been run on a GPU yet.
"""

from __future__ import annotations

import argparse
import contextlib
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
EVAL_TOL = 1e-6  # eval loss and metric, against the raw loop's
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
IGNORE_INDEX = -100

# The issue's targets, printed next to the measured ratios (a missed target is reported, not an
# exit status: on a shared machine it can be noise). Per-workload targets live in WORKLOADS.
TARGET_FUNCTIONAL_STEP = 1.03  # every workload
TARGET_RSS = 1.05  # every training workload
TARGET_IMPORT_S = 0.15
TARGET_EVAL_WALL = 0.5  # eval-heavy: trainkit.Trainer.evaluate / transformers.Trainer.evaluate
TARGET_EVAL_RSS = 1.0  # eval-heavy: peak RSS, trainkit.Trainer / transformers.Trainer

IMPORTS = {  # what --imports measures, each after `import torch`, in a fresh process
    "import trainkit": "import trainkit",
    "from trainkit import Trainer": "from trainkit import Trainer",
    "from transformers import Trainer": "from transformers import Trainer",
}

_THREADS = 1  # overridden by --threads, passed to children through the environment
_DEVICE = "cpu"  # the child's device ("cpu" or "cuda"), resolved from --device in the child


# ---------------------------------------------------------------------------------------------
# Workloads.


@dataclass(frozen=True)
class Workload:
    """A model and its rows: everything a runner needs that is not the runner itself.

    ``build_model(dropout)`` returns a float32 ``nn.Module`` whose forward takes the collated
    batch and returns an output with ``loss`` (seeded by the caller); ``rows(n)`` returns ``n``
    rows as a dict of columns (Python lists), ready for ``datasets.Dataset.from_dict``.
    ``collator`` collates a list of row dicts (every runner uses it; None:
    ``transformers.default_data_collator``). A training step is one update over ``grad_accum``
    batches of ``batch_size`` rows. ``kind="eval"``: the runners evaluate (``compute_metrics``)
    over ``--eval-batches`` batches instead of training.
    """

    name: str
    description: str
    batch_size: int
    build_model: Callable[[bool], Any]
    rows: Callable[[int], dict[str, list]]
    collator: Callable[[list[dict]], dict] | None = None
    grad_accum: int = 1
    shift_labels: bool = False  # the loss predicts labels[..., 1:] (causal LM): label items are counted shifted
    steps: int = 150  # default --steps
    warmup: int = 20  # default --warmup
    kind: str = "train"
    compute_metrics: Callable[[Any], dict] | None = None
    # The issue's per-workload targets (None: reported without a target).
    trainer_step_target: float | None = None
    hf_issue_step: float | None = None
    first_step_target_s: float | None = None
    hf_issue_first_s: float | None = None


def _tiny_bert_model(dropout: bool) -> Any:
    return _bert(dropout, hidden=32, layers=2, heads=2, intermediate=64, positions=64)


def _small_bert_model(dropout: bool) -> Any:
    return _bert(dropout, hidden=128, layers=4, heads=2, intermediate=512, positions=128)


def _bert(dropout: bool, *, hidden: int, layers: int, heads: int, intermediate: int, positions: int) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    no_dropout = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = BertConfig(
        vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=positions, num_labels=2, **no_dropout,
    )
    return BertForSequenceClassification(config)


def _classification_rows(n: int, seq: int) -> dict[str, list]:
    import torch

    gen = torch.Generator().manual_seed(DATA_SEED)
    return {
        "input_ids": torch.randint(0, 1000, (n, seq), generator=gen).tolist(),
        "attention_mask": torch.ones(n, seq, dtype=torch.long).tolist(),
        "labels": torch.randint(0, 2, (n,), generator=gen).tolist(),
    }


def _tiny_bert_rows(n: int) -> dict[str, list]:
    return _classification_rows(n, 32)


def _small_bert_rows(n: int) -> dict[str, list]:
    return _classification_rows(n, 128)


MLP_DIMS = (128, 256, 256, 10)


def _mlp_model(dropout: bool) -> Any:
    import torch
    from torch import nn

    class MLP(nn.Module):
        """A plain module (not a PreTrainedModel) returning a dict with ``loss``."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            for a, b in zip(MLP_DIMS[:-2], MLP_DIMS[1:-1]):
                layers += [nn.Linear(a, b), nn.GELU(), nn.Dropout(0.1 if dropout else 0.0)]
            layers.append(nn.Linear(MLP_DIMS[-2], MLP_DIMS[-1]))
            self.net = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
            logits = self.net(x)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
            return out

    return MLP()


def _mlp_rows(n: int) -> dict[str, list]:
    import torch

    gen = torch.Generator().manual_seed(DATA_SEED)
    return {
        "x": torch.randn(n, MLP_DIMS[0], generator=gen).tolist(),
        "labels": torch.randint(0, MLP_DIMS[-1], (n,), generator=gen).tolist(),
    }


GPT2_MIN_LEN, GPT2_MAX_LEN, GPT2_PAD = 8, 64, 0


def _tiny_gpt2_model(dropout: bool) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    no_dropout = {} if dropout else {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    config = GPT2Config(
        vocab_size=1000, n_positions=GPT2_MAX_LEN, n_embd=64, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=1,
        pad_token_id=GPT2_PAD, **no_dropout,
    )
    model = GPT2LMHeadModel(config)
    # transformers 5.24 infers loss_type from the class name, which gives None for GPT2LMHeadModel;
    # transformers.Trainer then counts num_items_in_batch unshifted (labels, not labels[..., 1:]) and
    # normalises the accumulated loss by too many items. The loss function is ForCausalLMLoss either
    # way; naming it makes transformers.Trainer's accumulation exact, like the other runners', so all
    # four do the same work (the benchmark measures speed, not that difference).
    model.loss_type = "ForCausalLM"
    return model


def _tiny_gpt2_rows(n: int) -> dict[str, list]:
    import torch

    gen = torch.Generator().manual_seed(DATA_SEED)
    lengths = torch.randint(GPT2_MIN_LEN, GPT2_MAX_LEN + 1, (n,), generator=gen).tolist()
    return {"input_ids": [torch.randint(2, 1000, (k,), generator=gen).tolist() for k in lengths]}


def pad_collate(rows: list[dict]) -> dict:
    """Right-pad ``input_ids`` to the batch's longest row; ``labels`` are the ids, -100 on padding."""
    import torch

    longest = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), longest), GPT2_PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])] = torch.as_tensor(row["input_ids"])
        mask[i, : len(row["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE_INDEX)}


EVAL_VOCAB, EVAL_SEQ = 1000, 32


def _eval_lm_model(dropout: bool) -> Any:
    import torch
    from torch import nn

    class TokenClassifier(nn.Module):
        """Cheap logits [batch, 32, 1000]: an embedding and a linear head over the vocabulary."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(EVAL_VOCAB, 32)
            self.head = nn.Linear(32, EVAL_VOCAB)

        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
            logits = self.head(self.embed(input_ids))
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = torch.nn.functional.cross_entropy(logits.reshape(-1, EVAL_VOCAB), labels.reshape(-1))
            return out

    return TokenClassifier()


def _eval_lm_rows(n: int) -> dict[str, list]:
    import torch

    gen = torch.Generator().manual_seed(DATA_SEED)
    return {
        "input_ids": torch.randint(0, EVAL_VOCAB, (n, EVAL_SEQ), generator=gen).tolist(),
        "labels": torch.randint(0, EVAL_VOCAB, (n, EVAL_SEQ), generator=gen).tolist(),
    }


def token_accuracy(prediction: Any) -> dict:
    """``compute_metrics`` of the eval workload: token accuracy of the argmax over the whole set."""
    predicted = prediction.predictions.argmax(-1)
    return {"accuracy": float((predicted == prediction.label_ids).mean())}


WORKLOADS = {
    "tiny-bert": Workload(
        name="tiny-bert",
        description="BertForSequenceClassification (vocab 1000, hidden 32, 2 layers, 2 heads, intermediate 64), "
        "batch 16 x seq 32, float32",
        batch_size=16, build_model=_tiny_bert_model, rows=_tiny_bert_rows,
        trainer_step_target=1.05, hf_issue_step=1.24, first_step_target_s=0.030, hf_issue_first_s=0.200,
    ),
    "small-bert": Workload(
        name="small-bert",
        description="BertForSequenceClassification (vocab 1000, hidden 128, 4 layers, 2 heads, intermediate 512), "
        "batch 16 x seq 128, float32",
        batch_size=16, build_model=_small_bert_model, rows=_small_bert_rows, steps=30, warmup=5,
    ),
    "mlp": Workload(
        name="mlp",
        description=f"plain nn.Module MLP {' -> '.join(map(str, MLP_DIMS))} (GELU, dropout 0.1) returning "
        "{'loss', 'logits'}, batch 64, float32 (overhead-dominated)",
        batch_size=64, build_model=_mlp_model, rows=_mlp_rows, trainer_step_target=1.10, hf_issue_step=1.74,
    ),
    "tiny-gpt2": Workload(
        name="tiny-gpt2",
        description=f"GPT2LMHeadModel (vocab 1000, n_embd 64, 2 layers, 2 heads), rows of {GPT2_MIN_LEN}-{GPT2_MAX_LEN} "
        "tokens right-padded per batch (pad_collate), batch 8 x gradient accumulation 4, float32",
        batch_size=8, build_model=_tiny_gpt2_model, rows=_tiny_gpt2_rows, collator=pad_collate, grad_accum=4,
        shift_labels=True, steps=50, warmup=5,
    ),
    "eval-heavy": Workload(
        name="eval-heavy",
        description=f"evaluation only: embedding + linear head, logits [16, {EVAL_SEQ}, {EVAL_VOCAB}] float32 per batch, "
        "compute_metrics = token accuracy of the argmax over the gathered logits",
        batch_size=16, build_model=_eval_lm_model, rows=_eval_lm_rows, kind="eval", compute_metrics=token_accuracy,
    ),
}


# ---------------------------------------------------------------------------------------------
# CUDA. Everything device-specific is here. On a CUDA device every runner trains with bf16
# autocast and fused AdamW, and every clock read is preceded by torch.cuda.synchronize() (the
# GPU runs asynchronously: without it a step's time would be its launch time). Not run on a GPU
# yet: the development machine has none.


def _resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")
    return requested


def _cuda() -> bool:
    return _DEVICE == "cuda"


def _clock() -> float:
    """``time.perf_counter``, after the GPU has finished the work queued so far (on CUDA)."""
    if _DEVICE == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def _autocast() -> Any:
    """The raw loop's forward context: bf16 autocast on CUDA, nothing on CPU (fp32)."""
    if not _cuda():
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16)


def _precision() -> str:
    """The functional loop's ``init_state(precision=)``, matching ``_autocast``."""
    return "bf16" if _cuda() else "no"


def _to_device(batch: Any) -> Any:
    """A collated batch (or window of them) on the device (pre-collated batches stay on the CPU;
    every runner moves each batch in its step, as the Trainers do)."""
    if isinstance(batch, list):
        return [_to_device(b) for b in batch]
    return {k: v.to(_DEVICE, non_blocking=True) for k, v in batch.items()}


def _device_args() -> dict[str, Any]:
    """The Trainers' ``TrainingArguments`` for the device (the same values for both)."""
    if _cuda():
        return {"bf16": True, "optim": "adamw_torch_fused", "use_cpu": False}
    return {"optim": "adamw_torch", "use_cpu": True}


def _peak_device_mib() -> float | None:
    if not _cuda():
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


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
    """The seeded model and the ``datasets.Dataset`` of ``total_steps`` updates' rows (every runner);
    for an eval workload, ``total_steps`` batches."""
    import datasets
    import torch

    datasets.disable_progress_bars()
    torch.manual_seed(MODEL_SEED)
    model = workload.build_model(dropout).to(torch.float32).to(_DEVICE)
    rows = workload.rows(total_steps * workload.batch_size * workload.grad_accum)
    return model, datasets.Dataset.from_dict(rows)


def _loop_batches(workload: Workload, dataset: Any, *, shuffle: bool = True) -> list[Any]:
    """The batches the Trainers see, collated before the loop: rows in the Trainers' order, batched by
    ``batch_size``, through the workload's collator (``transformers.default_data_collator`` by
    default, the Trainers' default). With gradient accumulation each item is a window: a list of
    ``grad_accum`` consecutive batches. ``shuffle=False``: rows in dataset order (evaluation)."""
    from transformers import default_data_collator

    collate = workload.collator or default_data_collator
    order = _data_order(len(dataset)).tolist() if shuffle else list(range(len(dataset)))
    batches = []
    for start in range(0, len(order), workload.batch_size):
        columns = dataset[order[start : start + workload.batch_size]]
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        batches.append(collate(rows))
    k = workload.grad_accum
    return batches if k == 1 else [batches[i : i + k] for i in range(0, len(batches), k)]


def _adamw(model: Any) -> Any:
    import torch

    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, **({"fused": True} if _cuda() else {}))


def _label_items(batch: dict, shift: bool) -> int:
    """Label items the model's mean loss divides by (labels != -100, shifted for a causal LM)."""
    labels = batch["labels"]
    return int((labels[..., 1:] if shift else labels).ne(IGNORE_INDEX).sum())


def _raw_stepper(model: Any, schedule: Callable[[int], float], workload: Workload | None = None) -> Callable:
    """The floor: the loop a user writes by hand (``model.train()`` once, then per batch).

    A window (a list of micro-batches: gradient accumulation) is accumulated exactly, the simple
    way: each micro-batch's mean loss is weighted by its share of the window's label items, so the
    update equals one over the union of the micro-batches (what trainkit and, with the
    ``loss_type`` the workload sets, transformers.Trainer do); the step's loss is the window's.
    """
    import torch

    shift = workload.shift_labels if workload is not None else False
    opt = _adamw(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    cuda = _cuda()

    def update() -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    def step(batch: Any) -> Any:
        if isinstance(batch, list):
            counts = [_label_items(micro, shift) for micro in batch]
            total = sum(counts)
            loss = 0.0
            for micro, count in zip(batch, counts):
                with _autocast():
                    part = model(**(_to_device(micro) if cuda else micro))["loss"] * (count / total)
                part.backward()
                loss = loss + part.detach()
            update()
            return loss
        with _autocast():
            loss = model(**(_to_device(batch) if cuda else batch))["loss"]  # a ModelOutput or a plain dict
        loss.backward()
        update()
        return loss

    return step


def _functional_stepper(model: Any, schedule: Callable[[int], float], workload: Workload | None = None,
                        **init_options: Any) -> Callable:
    """trainkit's functional step: ``train_step`` consumes the state and returns its successor
    (a window is one ``train_step`` over its micro-batches). ``init_options`` go to ``init_state``."""
    from trainkit import init_state, train_step

    init_options.setdefault("precision", _precision())
    state = init_state(model, _adamw(model), schedule=schedule, seed=SEED, **init_options)

    def step(batch: Any) -> Any:
        nonlocal state
        state, out = train_step(state, batch, max_grad_norm=MAX_GRAD_NORM)
        return out.loss

    step.progress = lambda: state.progress
    return step


_STEPPERS = {"raw": _raw_stepper, "functional": _functional_stepper}


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _rss_now_mib() -> float:
    """The current RSS (Linux ``/proc``; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _peak_rss_mib()


def _durations(start: float, ends: list[float], resumes: list[float] | None = None) -> list[float]:
    """Per-step durations from step-end timestamps: step 1 from ``start``, step k from end k-1 (or, when
    something ran at the end of step k-1 that is not part of the run, from ``resumes[k-1]``, its end)."""
    resumes = ends if resumes is None else resumes
    return [b - a for a, b in zip([start, *resumes[:-1]], ends)]


def run_loop(runner: str, workload: Workload, total: int, dropout: bool, **init_options: Any) -> dict:
    """``raw`` or ``functional``: construct, then iterate the pre-collated batches (windows)."""
    model, dataset = _build(workload, total, dropout)
    batches = _loop_batches(workload, dataset)
    if runner == "functional":
        from trainkit.data import data_order

        assert data_order(SEED, 0, len(dataset)).equal(_data_order(len(dataset))), "trainkit.data.data_order moved"
    t0 = time.perf_counter()
    if runner == "functional":
        step = _functional_stepper(model, _linear_schedule(total), workload, **init_options)
    else:
        step = _raw_stepper(model, _linear_schedule(total), workload)
    construct = time.perf_counter() - t0
    losses, ends, cpu_ends = [], [], []
    rss_start = _rss_now_mib()
    cpu_start, start = time.thread_time(), _clock()
    for batch in batches:
        losses.append(step(batch).detach())
        ends.append(_clock())
        cpu_ends.append(time.thread_time())
    if runner == "functional":
        assert step.progress().step == total, step.progress()
    losses = [float(x) for x in losses]
    return {
        "times": _durations(start, ends),
        "cpu_times": _durations(cpu_start, cpu_ends),
        "construct_s": construct,
        "rss_start_mib": rss_start,
        "losses": losses,
        "mean_loss": sum(losses) / len(losses),
    }


def training_arguments(workload: Workload, output_dir: str, total: int, *, log_every_step: bool = False,
                       **overrides: Any) -> Any:
    """The one ``transformers.TrainingArguments`` both Trainers get (trainkit converts it)."""
    import transformers

    values = dict(
        output_dir=output_dir, learning_rate=LR, per_device_train_batch_size=workload.batch_size,
        per_device_eval_batch_size=workload.batch_size, gradient_accumulation_steps=workload.grad_accum,
        max_steps=total, logging_strategy="steps" if log_every_step else "no", logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=SEED, dataloader_pin_memory=False,
        **_device_args(),
    )
    values.update(overrides)
    return transformers.TrainingArguments(**values)


def trainer_class(runner: str) -> Any:
    if runner == "trainkit_trainer":
        from trainkit import Trainer
    else:
        from transformers import Trainer
    return Trainer


def run_trainer(runner: str, workload: Workload, total: int, dropout: bool, log_every_step: bool,
                between: Callable[[int], None] | None = None, **arg_overrides: Any) -> dict:
    """``trainkit_trainer`` or ``hf_trainer``: the same ``transformers.TrainingArguments``, a clock callback.

    ``between(i)``, if given, runs at the end of step i+1 (inside ``on_step_end``) and is excluded
    from the Trainer's step times (``--interleaved`` runs a raw-loop step there). ``arg_overrides``
    change the ``TrainingArguments`` (``compile_precision.py``: ``torch_compile``, ``bf16``).
    """
    from transformers import TrainerCallback

    Trainer = trainer_class(runner)

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []
            self.resumes: list[float] = []
            self.cpu_resumes: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(_clock())
            self.cpu_ends.append(time.thread_time())
            if between is not None:
                between(len(self.ends) - 1)
            self.cpu_resumes.append(time.thread_time())
            self.resumes.append(time.perf_counter())

    model, dataset = _build(workload, total, dropout)
    with tempfile.TemporaryDirectory(prefix="trainkit-compare-") as tmp:
        args = training_arguments(workload, tmp, total, log_every_step=log_every_step, **arg_overrides)
        clock = StepClock()
        t0 = time.perf_counter()
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=workload.collator, callbacks=[clock])
        construct = time.perf_counter() - t0
        rss_start = _rss_now_mib()
        cpu_start, start = time.thread_time(), _clock()
        output = trainer.train()
    assert output.global_step == total == len(clock.ends), (output.global_step, total, len(clock.ends))
    logged = [e for e in trainer.state.log_history if "loss" in e and "train_loss" not in e]
    return {
        "times": _durations(start, clock.ends, clock.resumes),
        "cpu_times": _durations(cpu_start, clock.cpu_ends, clock.cpu_resumes),
        "construct_s": construct,
        "rss_start_mib": rss_start,
        "losses": [e["loss"] for e in sorted(logged, key=lambda e: e["step"])] if log_every_step else [],
        "mean_loss": output.training_loss,  # the Trainer's own mean over the run (sum of losses / steps)
    }


def _raw_twin(workload: Workload, total: int) -> tuple[Callable, list[Any]]:
    model, dataset = _build(workload, total, dropout=True)
    return _raw_stepper(model, _linear_schedule(total), workload), _loop_batches(workload, dataset)


def run_interleaved(workload: Workload, total: int, reverse: bool) -> dict:
    """The ``--interleaved`` cross-check, in this one process: every runner's steps alternate with the
    steps of a raw loop of its own (an identical model on the same batches), so each pair of steps is
    measured within a few step times and slow drifts in the machine's speed cancel.

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
            t0 = _clock()
            raw(batches[i])
            raw_times.append(_clock() - t0)

        if runner == "functional":
            model, dataset = _build(workload, total, dropout=True)
            step = _functional_stepper(model, _linear_schedule(total), workload)
            times = []
            for i in range(total):
                if i % 2 == 0:
                    timed_raw(i)
                t0 = _clock()
                step(batches[i])
                times.append(_clock() - t0)
                if i % 2 == 1:
                    timed_raw(i)
        else:
            times = run_trainer(runner, workload, total, dropout=True, log_every_step=False, between=timed_raw)["times"]
        out[runner] = {"raw": raw_times, "runner": times}
    return out


def run_eval(runner: str, workload: Workload, num_batches: int) -> dict:
    """An evaluation workload: ``num_batches`` batches through ``runner``'s evaluation, ``compute_metrics``
    on the whole set. Times the evaluation call alone; reports the RSS just before it and the peak."""
    import torch
    from transformers import EvalPrediction

    model, dataset = _build(workload, num_batches, dropout=False)
    metrics_fn = workload.compute_metrics
    construct = 0.0
    if runner in LOOPS:
        batches = _loop_batches(workload, dataset, shuffle=False)
    if runner == "raw":
        rss_before = _rss_now_mib()
        start = _clock()
        model.eval()
        losses, logits, labels = [], [], []
        with torch.no_grad(), _autocast():
            for batch in batches:
                out = model(**(_to_device(batch) if _cuda() else batch))
                losses.append(out["loss"].float())
                logits.append(out["logits"].float().cpu())
                labels.append(batch["labels"])
        predictions = torch.cat(logits).numpy()
        del logits
        label_ids = torch.cat(labels).numpy()
        metrics = {f"eval_{k}": v for k, v in metrics_fn(EvalPrediction(predictions=predictions, label_ids=label_ids)).items()}
        metrics["eval_loss"] = torch.stack(losses).mean().item()
        eval_s = _clock() - start
    elif runner == "functional":
        from trainkit import evaluate, init_state

        t0 = time.perf_counter()
        state = init_state(model, torch.optim.SGD(model.parameters(), lr=0.0), seed=SEED, precision=_precision())
        construct = time.perf_counter() - t0
        rss_before = _rss_now_mib()
        start = _clock()
        metrics = evaluate(state, batches, compute_metrics=metrics_fn).metrics
        eval_s = _clock() - start
    else:
        Trainer = trainer_class(runner)
        with tempfile.TemporaryDirectory(prefix="trainkit-compare-") as tmp:
            args = training_arguments(workload, tmp, 1)
            t0 = time.perf_counter()
            trainer = Trainer(model=model, args=args, eval_dataset=dataset, data_collator=workload.collator,
                              compute_metrics=metrics_fn)
            construct = time.perf_counter() - t0
            rss_before = _rss_now_mib()
            start = _clock()
            metrics = trainer.evaluate()
            eval_s = _clock() - start
    return {
        "eval_s": eval_s,
        "construct_s": construct,
        "rss_before_mib": rss_before,
        "eval_loss": metrics["eval_loss"],
        "metric": metrics["eval_accuracy"],
        "num_batches": num_batches,
    }


def run_import(statement: str) -> dict:
    """The time of one import statement after ``import torch`` (not timed), in this fresh process."""
    import torch  # noqa: F401

    t0 = time.perf_counter()
    exec(statement, {})
    return {"import_s": time.perf_counter() - t0}


def child_main(args: argparse.Namespace) -> None:
    global _DEVICE
    sys.path.insert(0, str(REPO_ROOT))
    if args.runner == "import":
        result = run_import(IMPORTS[args.statement])  # torch's threads are irrelevant to an import
    else:
        import torch

        _fix_threads()
        _DEVICE = _resolve_device(args.device)
        # torch's first optimizer construction imports torch._dynamo (~800 modules, ~2.5 s, ~60 MiB); a
        # transformers model has imported it already, a plain module has not. Pay it here, untimed, in
        # every child, so construction times and RSS compare the runners, not who imports it first.
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
        workload = WORKLOADS[args.workload]
        total = args.warmup + args.steps
        if workload.kind == "eval":
            result = run_eval(args.runner, workload, args.eval_batches)
        elif args.runner == "interleaved":
            result = run_interleaved(workload, total, reverse=args.reverse)
        elif args.runner in LOOPS:
            result = run_loop(args.runner, workload, total, dropout=not args.no_dropout)
        else:
            result = run_trainer(args.runner, workload, total, dropout=not args.no_dropout, log_every_step=args.no_dropout)
        result["threads"] = torch.get_num_threads()
        result["device"] = _DEVICE
        result["peak_device_mib"] = _peak_device_mib()
    result["peak_rss_mib"] = _peak_rss_mib()
    print(RESULT_MARK + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# Parent side: orchestration and the report.


def _start(args: argparse.Namespace, runner: str, *, dropout: bool = True, statement: str | None = None,
           reverse: bool = False, eval_batches: int | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--runner", runner, "--workload", args.workload,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--device", args.device, "--eval-batches", str(eval_batches or args.eval_batches)]
    if not dropout:
        cmd.append("--no-dropout")
    if statement is not None:
        cmd += ["--statement", statement]
    if reverse:
        cmd.append("--reverse")
    return subprocess.Popen(cmd, env=child_env(args), cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """A child's environment: threads fixed, transformers quiet, the shared private bytecode cache."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    if getattr(args, "pycache", None):  # every child reads (and the first ones write) bytecode there, none in the tree
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = args.pycache
    return env


def result_of(runner: str, proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"runner {runner!r} failed with exit code {proc.returncode}")
    line = next(ln for ln in reversed(stdout.splitlines()) if ln.startswith(RESULT_MARK))
    return json.loads(line[len(RESULT_MARK) :])


_result = result_of


def spawn(args: argparse.Namespace, runner: str, **kw: Any) -> dict:
    """One runner in a fresh process, waited for (nothing else of ours runs meanwhile)."""
    return result_of(runner, _start(args, runner, **kw))


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
        "rss_start": result.get("rss_start_mib", 0.0),
    }


def _check(results: dict[str, dict], step_tol: float = STEP_LOSS_TOL, mean_tol: float = LOSS_TOL) -> tuple[bool, list[str]]:
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
        good = diff <= mean_tol and step_diff <= step_tol
        ok &= good
        lines.append(
            f"  {name:<18} mean loss {results[name]['mean_loss']:.8f}  |diff| {diff:.2e}  max per-step |diff| "
            f"{step_diff:.2e} ({len(steps)} steps)  -> {'OK' if good else 'FAIL'}"
        )
    return ok, lines


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for pkg in ("torch", "transformers", "accelerate", "datasets"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


_versions = versions


def parent_main(args: argparse.Namespace) -> int:
    # Bytecode: the children share a private cache (PYTHONPYCACHEPREFIX), filled by the warm-up
    # round, so no measured run compiles a module from source (PYTHONDONTWRITEBYTECODE=1 or a fresh
    # checkout would otherwise make every child compile trainkit) and nothing is written in the tree.
    with tempfile.TemporaryDirectory(prefix="trainkit-compare-pycache-") as pycache:
        args.pycache = pycache
        if WORKLOADS[args.workload].kind == "eval":
            return _parent_eval(args)
        return _parent_main(args)


def _header(args: argparse.Namespace, workload: Workload) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"trainkit compare: workload {workload.name}: {workload.description}")
    device = args.device if args.device != "auto" else "auto (cuda if available)"
    print(f"  device {device}; {args.threads} thread(s); {versions()}; {os.cpu_count()} CPUs, load average at start {load}")


def _parent_main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    workload = WORKLOADS[args.workload]
    _header(args, workload)
    accumulation = f", gradient accumulation {workload.grad_accum}" if workload.grad_accum > 1 else ""
    print(
        f"  AdamW lr {LR:g} + clip {MAX_GRAD_NORM} + linear schedule{accumulation}; {args.reps} reps x {args.steps} "
        f"timed steps (+{args.warmup} warm-up steps each), one discarded warm-up round (= the same-work check), "
        f"fresh process per run, order alternating",
        flush=True,
    )

    # 1. The warm-up round, discarded from the timings; run with dropout off (and per-step logging
    #    in the Trainers) it is also the same-work check. Nothing of it is timed, so its runs share
    #    the cores (as many at a time as there are cores for their threads).
    check: dict[str, dict] = {}
    at_once = max(1, (os.cpu_count() or 1) // args.threads)
    for first in range(0, len(RUNNERS), at_once):
        procs = {name: _start(args, name, dropout=False) for name in RUNNERS[first : first + at_once]}
        check.update({name: result_of(name, proc) for name, proc in procs.items()})
    cuda = any(r.get("device") == "cuda" for r in check.values())
    # bf16 on a GPU: kernels (atomics in the embedding backward) need not be bit-reproducible across
    # processes, so the check is looser there.
    tols = (1e-2, 1e-3) if cuda else (STEP_LOSS_TOL, LOSS_TOL)
    check_ok, check_lines = _check(check, *tols)

    # 2. Alternating repetitions, one process at a time.
    per_rep: list[dict[str, dict[str, float]]] = []
    for rep in range(args.reps):
        order = _alternating(RUNNERS, rep)
        results = {name: spawn(args, name) for name in order}
        figs = {name: _figures(results[name], args.warmup) for name in RUNNERS}
        for name in RUNNERS:
            figs[name]["device_mib"] = results[name].get("peak_device_mib") or 0.0
        per_rep.append(figs)
        print(
            f"  rep {rep + 1}/{args.reps} ({order[0]} first): step us "
            + ", ".join(f"{n} {_us(figs[n]['step'])}" + ("" if n == "raw" else f" ({figs[n]['step'] / figs['raw']['step']:.3f})") for n in RUNNERS),
            flush=True,
        )

    main_part = time.perf_counter() - started  # the default run ends here

    # 3. Optional: import times, each statement in fresh processes, alternating.
    imports = measure_imports(args) if args.imports else None

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
        ("RSS at start, MiB", lambda n: _span(series[n]["rss_start"], _mib)),
    ]
    if cuda:
        rows.append(("peak CUDA memory, MiB", lambda n: _span(series[n]["device_mib"], _mib)))
    for name, cell in rows:
        print(f"{name:<{label}}" + "".join(f"{cell(n):>{col}}" for n in RUNNERS))
    print(
        "  start: the loop's first batch (raw, functional) / the train() call (Trainers, which also build the "
        "optimizer, schedule and data loader there); construction: AdamW + LambdaLR (raw), AdamW + init_state "
        "(functional), Trainer(...) (Trainers); RSS at start: just before the first batch / the train() call (imports, "
        "model, data)"
    )
    print()
    for name in RUNNERS[1:]:
        print(f"paired step ratio {name}/raw per rep (wall): " + ", ".join(_ratio(r) for r in ratios[name]["step"]))
    if imports:
        print()
        print_imports(imports, args.reps)

    print()
    print("targets (from the issue)                           measured (median)   verdict")
    tk_step, fn_step, hf_step = (med(ratios[n]["step"]) for n in ("trainkit_trainer", "functional", "hf_trainer"))
    inter = {n: med([m["pair_ratio"] for m in v]) for n, v in interleaved.items()} if interleaved else {}

    def also(name: str, target: float | None) -> list[str]:
        if name not in inter:
            return []
        return [f"interleaved {_ratio(inter[name])}" + (f" {_verdict(inter[name], target)}" if target else "")]

    issue_hf = [f"{workload.hf_issue_step} in the issue"] if workload.hf_issue_step else []
    hf_note = ", ".join([f"{_ratio(hf_step)} here", *also("hf_trainer", None), *issue_hf])
    target = workload.trainer_step_target
    targets = [
        (f"functional step / raw <= {TARGET_FUNCTIONAL_STEP}", _ratio(fn_step), _verdict(fn_step, TARGET_FUNCTIONAL_STEP),
         "; ".join(also("functional", TARGET_FUNCTIONAL_STEP))),
        (f"trainkit.Trainer step / raw <= {target}" if target else "trainkit.Trainer step / raw (no target)",
         _ratio(tk_step), _verdict(tk_step, target) if target else "",
         "; ".join([*also("trainkit_trainer", target), f"transformers.Trainer: {hf_note}"])),
    ]
    tk_first, hf_first = med(series["trainkit_trainer"]["first"]), med(series["hf_trainer"]["first"])
    first_target = workload.first_step_target_s
    issue_first = f", ~{workload.hf_issue_first_s * 1e3:.0f} ms in the issue" if workload.hf_issue_first_s else ""
    targets.append(
        (f"trainkit.Trainer train() to step 1 <= {first_target * 1e3:.0f} ms" if first_target else
         "trainkit.Trainer train() to step 1 (no target)", f"{_ms(tk_first)} ms",
         _verdict(tk_first, first_target) if first_target else "", f"transformers.Trainer: {_ms(hf_first)} ms here{issue_first}")
    )
    for name, title in (("functional", "functional"), ("trainkit_trainer", "trainkit.Trainer")):
        value = med(ratios[name]["rss"])
        extra = f"transformers.Trainer: {_ratio(med(ratios['hf_trainer']['rss']))} here" if name == "trainkit_trainer" else ""
        targets.append((f"{title} peak RSS / raw <= {TARGET_RSS}", _ratio(value), _verdict(value, TARGET_RSS), extra))
    targets.append(import_target(imports))
    for text, value, verdict, note in targets:
        print(f"  {text:<49}{value:>17}   {verdict:<8}{('  ' + note) if note else ''}")

    # How far this machine resolves a ratio: the raw loop run to run, and the share of wall time
    # the runs spent off the CPU (waiting for a core other processes held).
    raw_spread = max(series["raw"]["step"]) / min(series["raw"]["step"]) - 1
    off_cpu = med([fig[n]["step"] / fig[n]["cpu"] - 1 for fig in per_rep for n in RUNNERS])
    margin = TARGET_FUNCTIONAL_STEP - 1
    print(
        f"noise: raw loop run-to-run spread {raw_spread:.1%} (max/min - 1), wall time off-CPU {off_cpu:.1%} "
        f"(median over runs{'; on CUDA the CPU waits for the GPU' if cuda else ''}), load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if raw_spread > margin or (off_cpu > 0.05 and not cuda) or args.reps < 3:
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
        print(f"  {'':<18}{'raw, us':>30}{'runner, us':>30}{'overhead, us/step':>26}{'median per-pair ratio':>28}   per process")
        for name, runs in interleaved.items():
            pair = [m["pair_ratio"] for m in runs]
            print(
                f"  {name:<18}{_span([m['raw'] for m in runs], _us):>30}{_span([m['runner'] for m in runs], _us):>30}"
                f"{_span([m['runner'] - m['raw'] for m in runs], _us):>26}{_span(pair, _ratio):>28}   "
                + ", ".join(_ratio(r) for r in pair)
            )

    print()
    print(f"same-work check (the warm-up round: dropout off, {args.warmup + args.steps} steps, fresh processes; "
          f"mean loss vs raw within {tols[1]:.0e}, every step's within {tols[0]:.0e}): {'OK' if check_ok else 'FAIL'}")
    for line in check_lines:
        print(line)
    threads = {r["threads"] for r in check.values()}
    print(
        f"threads per child: {sorted(threads)}; device: {sorted({r.get('device', 'cpu') for r in check.values()})}; wall "
        f"time: {time.perf_counter() - started:.0f} s (check/warm-up round and reps: {main_part:.0f} s)"
    )

    if args.json:
        write_json(args, {
            "per_rep": per_rep, "ratios": ratios, "imports": imports, "interleaved": interleaved,
            "raw_spread": raw_spread, "off_cpu": off_cpu,
            "check": {n: {"mean_loss": r["mean_loss"], "losses": r["losses"]} for n, r in check.items()},
            "check_ok": check_ok,
        })
    return 0 if check_ok else 1


def measure_imports(args: argparse.Namespace) -> dict[str, list[float]]:
    """Each IMPORTS statement after ``import torch``, in fresh processes: one discarded round, then
    ``--reps`` rounds in alternating order."""
    names = tuple(IMPORTS)
    spawn_import = lambda stmt: spawn(args, "import", statement=stmt)["import_s"]  # noqa: E731
    for stmt in names:  # warm-up round (bytecode caches, page cache), discarded
        spawn_import(stmt)
    imports: dict[str, list[float]] = {stmt: [] for stmt in names}
    for rep in range(args.reps):
        for stmt in _alternating(names, rep):
            imports[stmt].append(spawn_import(stmt))
    return imports


def print_imports(imports: dict[str, list[float]], reps: int) -> None:
    print(f"import time after `import torch`, s (fresh processes, {reps} reps, alternating; median [min, max])")
    for stmt, values in imports.items():
        print(f"  {stmt:<34} {_span(values, _s)}")


def import_target(imports: dict[str, list[float]] | None) -> tuple[str, str, str, str]:
    text = f"import trainkit after torch <= {TARGET_IMPORT_S} s"
    if not imports:
        return text, "(not run)", "", "add --imports"
    value = statistics.median(imports["import trainkit"])
    return (text, f"{_s(value)} s", _verdict(value, TARGET_IMPORT_S),
            f"from transformers import Trainer: {_s(statistics.median(imports['from transformers import Trainer']))} s")


def write_json(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    skip = ("runner", "no_dropout", "statement", "pycache", "reverse")  # child-mode arguments
    Path(args.json).write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "args": {k: v for k, v in vars(args).items() if k not in skip},
        **figures,
    }, indent=2))


def _parent_eval(args: argparse.Namespace) -> int:
    """The evaluation workload: every runner evaluates ``--eval-batches`` batches, ``--reps`` times,
    one process at a time in alternating order, after a warm-up round on a few batches."""
    started = time.perf_counter()
    workload = WORKLOADS[args.workload]
    names = tuple(r for r in RUNNERS if r in args.runners)  # --runners: e.g. without hf_trainer at 2000 batches
    _header(args, workload)
    n = args.eval_batches
    one_copy = n * workload.batch_size * EVAL_SEQ * EVAL_VOCAB * 4 / 2**20
    print(
        f"  {n} eval batches of {workload.batch_size} rows; {args.reps} reps, fresh process per run, order alternating, "
        f"after a discarded warm-up round on {min(n, 20)} batches; the gathered logits take {one_copy:,.0f} MiB (one copy)",
        flush=True,
    )
    at_once = max(1, (os.cpu_count() or 1) // args.threads)
    for first in range(0, len(names), at_once):  # warm-up: bytecode and page caches, small
        procs = {name: _start(args, name, eval_batches=min(n, 20)) for name in names[first : first + at_once]}
        for name, proc in procs.items():
            result_of(name, proc)
    runs: list[dict[str, dict]] = []
    for rep in range(args.reps):
        order = _alternating(names, rep)
        results = {name: spawn(args, name) for name in order}
        runs.append(results)
        print(
            f"  rep {rep + 1}/{args.reps} ({order[0]} first): eval s "
            + ", ".join(f"{name} {results[name]['eval_s']:.2f}" for name in names)
            + "; peak RSS MiB " + ", ".join(f"{name} {results[name]['peak_rss_mib']:,.0f}" for name in names),
            flush=True,
        )
    imports = measure_imports(args) if args.imports else None

    series = {
        name: {
            "eval": [r[name]["eval_s"] for r in runs],
            "construct": [r[name]["construct_s"] for r in runs],
            "rss": [r[name]["peak_rss_mib"] for r in runs],
            "growth": [r[name]["peak_rss_mib"] - r[name]["rss_before_mib"] for r in runs],
        }
        for name in names
    }
    hf = "hf_trainer" in names
    vs_hf = {name: {key: [r[name][src] / r["hf_trainer"][src] if hf else float("nan") for r in runs]
                    for key, src in (("eval", "eval_s"), ("rss", "peak_rss_mib"))} for name in names}
    col, label = 27, 34
    print()
    print("median [min, max] over reps")
    print(f"{'':<{label}}" + "".join(f"{name:>{col}}" for name in names))
    rows = [
        ("evaluation wall, s", lambda m: _span(series[m]["eval"], _s)),
        ("evaluation wall / hf (paired)", lambda m: _span(vs_hf[m]["eval"], _ratio)),
        ("peak RSS, MiB", lambda m: _span(series[m]["rss"], _mib)),
        ("peak RSS / hf (paired)", lambda m: _span(vs_hf[m]["rss"], _ratio)),
        ("peak RSS - RSS before eval, MiB", lambda m: _span(series[m]["growth"], _mib)),
        ("construction, ms", lambda m: _span(series[m]["construct"], _ms)),
    ]
    for name, cell in rows:
        if hf or "/ hf" not in name:
            print(f"{name:<{label}}" + "".join(f"{cell(m):>{col}}" for m in names))
    print(
        "  evaluation: the evaluate() call (Trainers: data loader, forward, gathering, compute_metrics), the raw loop "
        "and trainkit.evaluate over pre-collated batches; raw: outputs appended to lists, one torch.cat at the end"
    )
    if imports:
        print()
        print_imports(imports, args.reps)

    med = statistics.median
    print()
    print("targets (from the issue)                                     measured (median)   verdict")
    if not hf or "trainkit_trainer" not in names or "functional" not in names or "raw" not in names:
        print("  (needs all four runners: run without --runners)")
        targets = [import_target(imports)]
    else:
        wall, rss = med(vs_hf["trainkit_trainer"]["eval"]), med(vs_hf["trainkit_trainer"]["rss"])
        targets = [
            (f"trainkit.Trainer / transformers.Trainer eval wall <= {TARGET_EVAL_WALL}", _ratio(wall), _verdict(wall, TARGET_EVAL_WALL),
             f"functional evaluate: {_ratio(med(vs_hf['functional']['eval']))}; raw loop: {_ratio(med(vs_hf['raw']['eval']))}"),
            (f"trainkit.Trainer / transformers.Trainer eval peak RSS <= {TARGET_EVAL_RSS}", _ratio(rss), _verdict(rss, TARGET_EVAL_RSS),
             f"functional evaluate: {_ratio(med(vs_hf['functional']['rss']))}; raw loop: {_ratio(med(vs_hf['raw']['rss']))}"),
            import_target(imports),
        ]
    for text, value, verdict, note in targets:
        print(f"  {text:<59}{value:>17}   {verdict:<8}{('  ' + note) if note else ''}")

    ok, lines = True, []
    for name in names:
        loss_diff = max(abs(r[name]["eval_loss"] - r[names[0]]["eval_loss"]) for r in runs)
        metric_diff = max(abs(r[name]["metric"] - r[names[0]]["metric"]) for r in runs)
        good = loss_diff <= EVAL_TOL and metric_diff <= EVAL_TOL
        ok &= good
        lines.append(f"  {name:<18} eval_loss {runs[0][name]['eval_loss']:.8f} (max |diff| {loss_diff:.1e})  accuracy "
                     f"{runs[0][name]['metric']:.8f} (max |diff| {metric_diff:.1e})  -> {'OK' if good else 'FAIL'}")
    print()
    print(f"same-work check (every measured run: eval_loss and accuracy vs the {names[0]} run of its rep, within {EVAL_TOL:.0e}): "
          f"{'OK' if ok else 'FAIL'}")
    for line in lines:
        print(line)
    print(f"threads per child: {sorted({r[m]['threads'] for r in runs for m in names})}; wall time: "
          f"{time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(args, {"runs": runs, "imports": imports, "check_ok": ok})
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="tiny-bert",
                        help="the model and data (default tiny-bert): tiny-bert and small-bert (BERT classifiers), "
                        "mlp (a plain nn.Module), tiny-gpt2 (causal LM, padded batches, gradient accumulation 4), "
                        "eval-heavy (evaluation only)")
    parser.add_argument("--reps", type=int, default=5, help="measured repetitions (default 5)")
    parser.add_argument("--steps", type=int, help="timed steps (updates) per run (default: the workload's, e.g. tiny-bert 150)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up steps per run, >= 1 (default: the workload's, e.g. tiny-bert 20)")
    parser.add_argument("--eval-batches", type=int, default=2000, help="batches the eval-heavy workload evaluates (default 2000)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL/torch threads per child (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto (default): cuda when torch sees a GPU, else cpu")
    parser.add_argument("--imports", action="store_true", help="also measure import times after torch (fresh processes)")
    parser.add_argument(
        "--interleaved", action="store_true",
        help="also run --reps processes in which every runner's steps alternate with a raw loop's steps (a "
        "cross-check robust to slow drifts in machine speed; training workloads)",
    )
    parser.add_argument("--runners", default=",".join(RUNNERS),
                        help="eval-heavy only: the runners to run, comma-separated (default all four; e.g. leave out "
                        "hf_trainer, whose gathering is quadratic in the number of batches)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    parser.add_argument("--runner", choices=(*RUNNERS, "interleaved", "import"), help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--reverse", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-dropout", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--statement", choices=tuple(IMPORTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.pycache = None
    workload = WORKLOADS[args.workload]
    args.steps = workload.steps if args.steps is None else args.steps
    args.warmup = workload.warmup if args.warmup is None else args.warmup
    if min(args.reps, args.steps, args.warmup, args.threads, args.eval_batches) < 1:
        parser.error("--reps, --steps, --warmup, --threads and --eval-batches must be >= 1")
    if args.interleaved and workload.kind == "eval":
        parser.error("--interleaved applies to training workloads")
    args.runners = [r for r in args.runners.split(",") if r]
    if not args.runners or set(args.runners) - set(RUNNERS):
        parser.error(f"--runners: a comma-separated subset of {','.join(RUNNERS)}")
    if workload.kind == "train" and tuple(args.runners) != RUNNERS and not args.runner:
        parser.error("--runners applies to the eval-heavy workload (training workloads compare every runner with raw)")
    global _THREADS
    _THREADS = args.threads
    if args.runner:
        child_main(args)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
