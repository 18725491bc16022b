"""The scenarios tests/test_distributed.py runs under ``torchrun`` (and in one process, as reference).

``python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py SCENARIO OUT`` runs one
scenario; every process writes what the test compares into ``OUT`` (``rank{r}-*.pt``/``.json``).
The same functions run in the test process with one process and twice the per-process batch.
The models are tiny float64 transformers trained on padded variable-length token batches: a BERT
token classifier (the model's own loss, in float64) and a GPT-2 with a float64 ``compute_loss_func``
(transformers' causal-LM loss upcasts to float32, whose rounding Adam would amplify past 1e-6).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.strategies import tiny_gpt2  # noqa: E402

GLOBAL_BATCH = 8


def rows(n: int, seed: int) -> list[dict]:
    """Token rows of random length 3..12, a label in 0..4 per token."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(3, 13, (), generator=g))
        ids = torch.randint(1, 64, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [i % 5 for i in ids]})
    return out


def pad_collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row: input 0, mask 0, labels -100 (so rows carry different item counts)."""
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for i, r in enumerate(batch):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tiny_token_bert(seed: int, dropout: float = 0.0) -> torch.nn.Module:
    from transformers import BertConfig, BertForTokenClassification

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        max_position_embeddings=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        num_labels=5)
    torch.manual_seed(seed)
    return BertForTokenClassification(config).double()


def causal_loss(outputs, labels, num_items_in_batch):
    """transformers' causal-LM loss (shifted, summed, divided by the window's items), kept in float64."""
    logits = outputs["logits"][:, :-1].flatten(0, 1)
    summed = torch.nn.functional.cross_entropy(logits, labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")
    return summed / num_items_in_batch


def token_accuracy(pred) -> dict[str, float]:
    logits, labels = pred.predictions, pred.label_ids
    predicted, target = logits.argmax(-1), labels
    mask = target != -100
    true_logit = np.take_along_axis(logits, np.where(mask, target, 0)[..., None], -1)[..., 0][mask]
    return {"accuracy": float((predicted[mask] == target[mask]).mean()), "rows": float(len(labels)),
            "mean_true_logit": float(true_logit.mean())}


def causal_accuracy(pred) -> dict[str, float]:
    return token_accuracy(type(pred)(predictions=pred.predictions[:, :-1], label_ids=pred.label_ids[:, 1:]))


def _args(out: str, world: int, **options):
    from trainkit import TrainingArguments

    defaults = dict(output_dir=out, per_device_train_batch_size=GLOBAL_BATCH // world, per_device_eval_batch_size=3,
                    learning_rate=1e-2, optim="adamw_torch", report_to="none", disable_tqdm=True, logging_steps=1,
                    save_strategy="no", seed=7)
    return TrainingArguments(**{**defaults, **options})


def _params(model: torch.nn.Module) -> dict:
    """The whole model's parameters (gathered on rank 0 when sharded: a collective)."""
    from trainkit.sharding import full_state, is_sharded

    if is_sharded(model):
        return full_state(model, None)[0]
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trainer_run(out: str, world: int, accumulation: int, **options) -> dict:
    """Train 2 epochs of 32 rows at global batch 8; evaluate the untrained model on 13 rows first (batches of
    3: rank 0 gets 3 batches, rank 1 gets 2, the last one short)."""
    from trainkit import Trainer

    trainer = Trainer(model=tiny_token_bert(seed=3), args=_args(out, world, gradient_accumulation_steps=accumulation,
                                                           num_train_epochs=2, **options),
                      data_collator=pad_collate, train_dataset=rows(32, 1), eval_dataset=rows(13, 2),
                      compute_metrics=token_accuracy)
    metrics = trainer.evaluate()
    predicted = trainer.predict(rows(13, 2))
    trainer.train()
    return {
        "eval": {k: v for k, v in metrics.items() if not k.endswith(("runtime", "per_second"))},
        "predictions": list(predicted.predictions.shape), "label_ids": list(predicted.label_ids.shape),
        "logs": [{k: v for k, v in entry.items() if k in ("loss", "grad_norm", "learning_rate", "step", "epoch")}
                 for entry in trainer.state.log_history if "loss" in entry],
        "params": _params(trainer.model),
    }


def small_eval_run(out: str, world: int) -> dict:
    """train() with an evaluation set of one batch (2 rows, batches of 3): process 1 has no evaluation batch.
    The dry run at the start of train() must let it through (evaluate() copes), not call the set empty."""
    from trainkit import Trainer

    trainer = Trainer(model=tiny_token_bert(seed=3), args=_args(out, world, max_steps=2, eval_strategy="steps", eval_steps=2),
                      data_collator=pad_collate, train_dataset=rows(32, 1), eval_dataset=rows(2, 2))
    trainer.train()
    return {"eval_loss": [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]}


def fsdp_trainer_resume(out: str, world: int) -> dict:
    """trainer_run's FSDP run saved a checkpoint per epoch; a fresh sharded Trainer resumes from epoch 1's."""
    from trainkit import Trainer

    trainer = Trainer(model=tiny_token_bert(seed=3), args=_args(out, world, num_train_epochs=2, fsdp="full_shard",
                                                                save_strategy="epoch", gradient_accumulation_steps=2),
                      data_collator=pad_collate, train_dataset=rows(32, 1))
    trainer.train(resume_from_checkpoint=str(Path(out) / "checkpoint-2"))
    return {"params": _params(trainer.model), "logs": [e["loss"] for e in trainer.state.log_history if "loss" in e]}


def functional_run(world: int, strategy: str = "ddp", checkpoint: str | None = None) -> dict:
    """A compose-your-own loop: the same code for one process and under torchrun."""
    from trainkit import evaluate, init_state, load_checkpoint, make_optimizer, save_checkpoint, train_step
    from trainkit.data import eval_batches, train_batches, windows
    from trainkit.distributed import all_reduce_metrics, wrap_model
    from trainkit.sharding import shard_model

    def fresh():
        model = tiny_gpt2(seed=5)
        wrapped = shard_model(model) if strategy == "fsdp" else wrap_model(model)  # FSDP: before the optimizer
        return model, wrapped, make_optimizer(model, "adamw_torch", lr=1e-2)

    model, wrapped, optimizer = fresh()
    state = init_state(wrapped, optimizer, seed=11)
    losses = []
    for epoch in range(2):
        batches = train_batches(rows(24, 3), batch_size=GLOBAL_BATCH // world, collator=pad_collate, seed=11, epoch=epoch)
        for window in windows(batches, 2):
            state, out = train_step(state, window, max_grad_norm=1.0, compute_loss_func=causal_loss)
            losses.append(out.loss.item())
    result = evaluate(state, eval_batches(rows(13, 4), batch_size=3, collator=pad_collate), compute_metrics=causal_accuracy,
                      compute_loss_func=causal_loss)
    mean = all_reduce_metrics({"rank_loss": losses[-1]})
    params = _params(model)
    after_load = None
    if checkpoint is not None:  # save (every process under FSDP), load into a fresh model, take one step on both
        path = save_checkpoint(state, checkpoint)
        model2, wrapped2, optimizer2 = fresh()
        loaded = load_checkpoint(path, wrapped2, optimizer2)
        window = next(windows(train_batches(rows(24, 3), batch_size=GLOBAL_BATCH // world, collator=pad_collate,
                                            seed=11, epoch=5), 2))
        _, a = train_step(state, window, max_grad_norm=1.0, compute_loss_func=causal_loss)
        _, b = train_step(loaded, window, max_grad_norm=1.0, compute_loss_func=causal_loss)
        same = all(torch.equal(x, y) for x, y in zip(_params(model).values(), _params(model2).values()))
        after_load = {"losses": [a.loss.item(), b.loss.item()], "same_params": same}
    from trainkit.distributed import local_rank, rank, world_size

    return {"losses": losses, "eval": {k: v for k, v in result.metrics.items() if not k.endswith(("runtime", "per_second"))},
            "reduced": mean, "params": params, "after_load": after_load, "process": [rank(), local_rank(), world_size()]}


class _KillAt:
    """A callback that SIGKILLs this process at the end of a step, as a crash would."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class KillAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    os.kill(os.getpid(), signal.SIGKILL)

        return KillAt()


def resume_run(out: str, world: int, *, kill_at: int | None = None, resume: bool = False) -> dict:
    """6 updates with dropout, a checkpoint every 2; optionally killed, optionally resumed."""
    from trainkit import Trainer

    args = _args(out, world, max_steps=6, gradient_accumulation_steps=2, save_strategy="steps", save_steps=2)
    trainer = Trainer(model=tiny_gpt2(seed=3, dropout=0.1), args=args, data_collator=pad_collate,
                      train_dataset=rows(40, 6), callbacks=[_KillAt(kill_at)] if kill_at else None)
    trainer.train(resume_from_checkpoint=True if resume else None)
    return {"params": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "logs": [e["loss"] for e in trainer.state.log_history if "loss" in e],
            "flags": [trainer.state.is_local_process_zero, trainer.state.is_world_process_zero]}


class _Slow:
    """A callback that makes each step last a while and tells the test (a file) that training runs."""

    def __new__(cls, marker: Path):
        from transformers import TrainerCallback

        class Slow(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 3 and state.is_world_process_zero:
                    marker.write_text("running")
                time.sleep(0.02)

        return Slow()


def sigterm_run(out: str, world: int) -> dict:
    """A long run stopped by SIGTERM (sent to torchrun, which forwards it to every process)."""
    from trainkit import Trainer

    args = _args(out, world, max_steps=100_000, save_strategy="steps", save_steps=100_000)
    trainer = Trainer(model=tiny_gpt2(seed=3, dropout=0.1), args=args, data_collator=pad_collate,
                      train_dataset=rows(40, 6), callbacks=[_Slow(Path(out) / "running")])
    trainer.train()
    return {"step": trainer.state.global_step, "params": _params(trainer.model)}


def _save(out: Path, name: str, result: dict) -> None:
    params = result.pop("params", None)
    if params:  # empty on ranks > 0 under FSDP (gathered on rank 0)
        torch.save(params, out / f"{name}.pt")
    (out / f"{name}.json").write_text(json.dumps(result))


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    from trainkit.distributed import rank, setup_distributed, teardown_distributed, world_size

    setup_distributed()
    r, world = rank(), world_size()
    try:
        if scenario == "train":
            for k in (1, 2):
                _save(out, f"rank{r}-trainer-ga{k}", trainer_run(str(out / f"run-ga{k}"), world, k))
            _save(out, f"rank{r}-functional", functional_run(world))
            _save(out, f"rank{r}-uninterrupted", resume_run(str(out / "uninterrupted"), world))
            _save(out, f"rank{r}-small-eval", small_eval_run(str(out / "small-eval"), world))
        elif scenario == "killed":
            resume_run(str(out / "resumed"), world, kill_at=5)
        elif scenario == "resume":
            _save(out, f"rank{r}-resumed", resume_run(str(out / "resumed"), world, resume=True))
        elif scenario == "sigterm":
            (out / "sigterm").mkdir(exist_ok=True)
            _save(out, f"rank{r}-sigterm", sigterm_run(str(out / "sigterm"), world))
        elif scenario == "functional":
            _save(out, f"rank{r}-functional", functional_run(world))
        elif scenario == "fsdp":
            _save(out, f"rank{r}-fsdp-functional", functional_run(world, "fsdp", checkpoint=str(out / "fsdp-functional")))
            _save(out, f"rank{r}-fsdp-trainer", trainer_run(str(out / "fsdp-trainer"), world, 2, fsdp="full_shard",
                                                            save_strategy="epoch"))
            _save(out, f"rank{r}-fsdp-resumed", fsdp_trainer_resume(str(out / "fsdp-trainer"), world))
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
