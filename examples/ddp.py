"""The compose-your-own loop under ``torchrun``: the same script runs in one process or several.

A tiny BERT learns whether a sequence of random tokens contains the token 7 (generated and
seeded data: nothing downloads). Each process trains on micro-batches of 16 rows, two per
update, so an update sees 32 rows in one process and 64 with two. Run::

    torchrun --nproc_per_node=2 examples/ddp.py    # 2 processes (gloo on CPU, nccl on CUDA)
    python examples/ddp.py                         # 1 process, no process group

Only the main process prints and writes the final checkpoint (``ddp_output/checkpoint-N``).
"""

import time

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, default_data_collator

from trainkit import evaluate, init_state, make_optimizer, make_schedule, save_checkpoint, train_step
from trainkit.data import eval_batches, num_batches, train_batches, updates_per_epoch, windows
from trainkit.distributed import (
    all_reduce_metrics,
    barrier,
    is_main_process,
    setup_distributed,
    teardown_distributed,
    wrap_model,
)

BATCH, ACCUMULATION, EPOCHS, SEED = 16, 2, 3, 0


def make_rows(n, seed):
    """``n`` rows of 16 tokens in 8..49; half of them (at random) get one 7. The label: has a 7.

    Example:
        >>> rows = make_rows(4, seed=1)
        >>> sorted(rows[0]), tuple(rows[0]["input_ids"].shape)
        (['input_ids', 'labels'], (16,))
        >>> all(r["labels"] == int(7 in r["input_ids"].tolist()) for r in rows)
        True
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 50, (n, 16), generator=g)
    has_seven = torch.rand(n, generator=g) < 0.5
    ids[has_seven, torch.randint(0, 16, (n,), generator=g)[has_seven]] = 7
    return [{"input_ids": ids[i], "labels": int(has_seven[i])} for i in range(n)]


def accuracy(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def main():
    torch.set_num_threads(1)
    info = setup_distributed()  # reads torchrun's RANK, WORLD_SIZE...; rank 0 of 1 under plain python
    try:
        torch.manual_seed(SEED)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
        config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, num_labels=2)
        # One device per process: cuda:LOCAL_RANK on a GPU node (nccl), else the CPU (gloo).
        device = torch.device("cuda", info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
        model = BertForSequenceClassification(config).to(device)  # on its device before wrap_model
        train, test = make_rows(1024, seed=1), make_rows(500, seed=2)

        # Per process: 1024 rows / (16 rows x W processes) batches, grouped 2 per update.
        steps_per_epoch = updates_per_epoch(num_batches(len(train), BATCH, world_size=info.world_size), ACCUMULATION)
        optimizer = make_optimizer(model, "adamw_torch", lr=3e-3, weight_decay=0.01)  # over the bare model
        schedule = make_schedule("linear", num_warmup_steps=steps_per_epoch // 2,
                                 num_training_steps=EPOCHS * steps_per_epoch)
        state = init_state(wrap_model(model), optimizer, schedule=schedule, seed=SEED)

        for epoch in range(EPOCHS):
            start, losses = time.perf_counter(), []
            # This process's share of the epoch's seeded order (rank r: batches r, r + W, ...).
            batches = train_batches(train, batch_size=BATCH, collator=default_data_collator, seed=SEED, epoch=epoch)
            for window in windows(batches, ACCUMULATION):
                state, out = train_step(state, window, max_grad_norm=1.0)
                losses.append(out.loss.item())  # the global window's loss, the same on every process
            state = state.replace(progress=state.progress.next_epoch())  # a checkpoint from here resumes at epoch + 1
            # Every process evaluates its share; evaluate gathers them back into dataset order.
            result = evaluate(state, eval_batches(test, batch_size=64, collator=default_data_collator),
                              compute_metrics=accuracy)
            slowest = all_reduce_metrics({"seconds": time.perf_counter() - start}, op="max")["seconds"]
            metrics = result.metrics
            if is_main_process():
                print(f"epoch {epoch}  step {state.step:3d}  train loss {sum(losses) / len(losses):.4f}  "
                      f"eval loss {metrics['eval_loss']:.4f}  accuracy {metrics['eval_accuracy']:.3f}  "
                      f"({slowest:.1f} s, {info.world_size} process{'es' if info.world_size > 1 else ''})", flush=True)

        barrier()  # every process has finished its last step
        checkpoint = save_checkpoint(state, "ddp_output") if is_main_process() else None
        barrier()  # nobody moves on (or exits) before the checkpoint is committed
        if checkpoint is not None:
            print(f"saved {checkpoint}", flush=True)
        return {"state": state, "metrics": metrics, "accuracy": metrics["eval_accuracy"], "checkpoint": checkpoint}
    finally:
        teardown_distributed()


if __name__ == "__main__":
    result = main()
