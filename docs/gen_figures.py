"""Draw the figures of the documentation: one learning-rate curve per schedule, and a run.

Run from the repository root after changing a schedule (needs matplotlib)::

    python docs/gen_figures.py

It writes ``docs/img/schedule-<name>.png`` for every name in ``trainkit.SCHEDULE_NAMES`` with
``trainkit.plot_schedule`` (``docs/optimizers-and-schedules.md``, ``docs/concepts.md``), and
``docs/img/log-history.png``, a short Trainer run drawn by ``trainkit.plot_log_history``
(``docs/trainer.md``). It takes a minute or two on a CPU.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import trainkit

IMG = Path(__file__).resolve().parent / "img"
STEPS, WARMUP = 100, 10

# Options a schedule needs (or shows best with) beyond the step counts; everything else is HF's default.
OPTIONS: dict[str, dict] = {
    "polynomial": {"lr_init": 1.0, "lr_end": 0.1, "power": 2.0},
    "cosine_with_restarts": {"num_cycles": 3},
    "cosine_with_min_lr": {"min_lr_rate": 0.1},
    "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
    "warmup_stable_decay": {"num_decay_steps": 30},
}


def schedule_figures(out: Path = IMG) -> list[Path]:
    """Write ``schedule-<name>.png`` for every schedule name into ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    takes_dpi = "dpi" in inspect.signature(trainkit.plot_schedule).parameters
    paths = []
    for name in trainkit.SCHEDULE_NAMES:
        extra = {"dpi": 80} if takes_dpi else {}
        warmup = 0 if name == "constant" else WARMUP  # constant ignores warmup (and warns, as HF)
        options = OPTIONS.get(name, {})
        shown = ", ".join(f"{k}={v}" for k, v in options.items() if k != "lr_init")  # lr_init: the base lr, 1
        title = f"{name} ({shown})" if shown else name
        paths.append(trainkit.plot_schedule(name, out / f"schedule-{name}.png", num_training_steps=STEPS,
                                            num_warmup_steps=warmup, title=title, **options, **extra))
    return paths


def log_history_figure(out: Path = IMG) -> Path:
    """Train a tiny BERT for a few seconds with the Trainer and draw its log history."""
    import tempfile

    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    def rows(n: int, seed: int) -> list[dict]:  # does the sequence contain the token 7?
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(8, 50, (n, 16), generator=g)
        label = torch.rand(n, generator=g) < 0.5
        ids[label, torch.randint(0, 16, (n,), generator=g)[label]] = 7
        return [{"input_ids": ids[i], "labels": int(label[i])} for i in range(n)]

    def accuracy(p) -> dict:
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    with tempfile.TemporaryDirectory() as tmp:
        args = trainkit.TrainingArguments(output_dir=tmp, num_train_epochs=3, per_device_train_batch_size=32,
                                          learning_rate=1e-3, warmup_steps=0.1, logging_steps=4, eval_strategy="steps",
                                          eval_steps=8,
                                          save_strategy="no", disable_tqdm=True, report_to="none")
        trainer = trainkit.Trainer(model=model, args=args, train_dataset=rows(1024, 1), eval_dataset=rows(256, 2),
                                   compute_metrics=accuracy)
        trainer.train()
    return trainkit.plot_log_history(trainer.state.log_history, out / "log-history.png",
                                     title="a tiny BERT classifier, 3 epochs")


def main() -> int:
    if not hasattr(trainkit, "plot_schedule"):
        print("trainkit.plot_schedule is missing: this trainkit cannot draw the figures.", file=sys.stderr)
        return 1
    for path in [*schedule_figures(), log_history_figure()]:
        print(f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}  "
              f"{path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
