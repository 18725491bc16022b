"""A complete training loop written from trainkit's pure pieces (the compose-your-own-loop user).

A tiny BERT learns whether a sequence of random tokens contains the token 7. Everything is
generated and seeded: nothing downloads. Run: ``python examples/functional_loop.py``.
"""

import torch
from transformers import BertConfig, BertForSequenceClassification

from trainkit import eval_step, init_state, make_optimizer, make_schedule, train_step


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 50, (n, 16), generator=g)  # tokens 8..49: no 7 yet
    has_seven = torch.rand(n, generator=g) < 0.5
    ids[has_seven, torch.randint(0, 16, (n,), generator=g)[has_seven]] = 7  # one 7 in half the rows
    labels = has_seven.long()
    return [{"input_ids": ids[i : i + 32], "labels": labels[i : i + 32]} for i in range(0, n, 32)]


torch.manual_seed(0)
config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2)
model = BertForSequenceClassification(config)
train, test, epochs = make_data(1024, seed=1), make_data(512, seed=2), 3
optimizer = make_optimizer(model, "adamw_torch", lr=3e-3, weight_decay=0.01)
schedule = make_schedule("linear", num_warmup_steps=20, num_training_steps=epochs * len(train) // 2)
state = init_state(model, optimizer, schedule=schedule, seed=0)

for epoch in range(epochs):
    for i in range(0, len(train), 2):  # two micro-batches of 32 per update: exact accumulation
        state, out = train_step(state, train[i : i + 2], max_grad_norm=1.0)
    evals = [eval_step(state, batch) for batch in test]
    accuracy = sum((e.logits.argmax(-1) == e.labels).sum().item() for e in evals) / 512
    eval_loss = sum(e.loss.item() for e in evals) / len(evals)
    print(f"epoch {epoch}  step {state.step:3d}  train loss {out.loss.item():.4f}  eval loss {eval_loss:.4f}  accuracy {accuracy:.3f}")
