"""torch.compile through init_state(compile=...) and TrainingArguments(torch_compile=True).

The compiled region is the model's forward (with a transformers model's loss); the optimizer
step and the learning rate stay outside, so a schedule that changes the rate every step must not
recompile. Recompiles are counted with a backend that counts the graphs it is given (dynamo
calls the backend once per graph it compiles, recompiles included).
"""

from __future__ import annotations

import pytest
import torch

from tests.strategies import mlp, tiny_bert
from trainkit import ConfigError, init_state, make_optimizer, make_schedule, train_step


class CountingBackend:
    """A torch.compile backend that runs the captured graph eagerly (through aot_eager) and counts graphs."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph, example_inputs):
        from functorch.compile import make_boxed_func
        from torch._dynamo.backends.common import aot_autograd

        self.graphs += 1
        return aot_autograd(fw_compiler=lambda gm, _: make_boxed_func(gm.forward))(graph, example_inputs)


def _batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 64, (4, 12), generator=g), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.randint(0, 3, (4,), generator=g)} for _ in range(n)]


def _run(compile_option, steps: int = 6) -> list[float]:
    model = tiny_bert(seed=1)
    optimizer = make_optimizer(model, "adamw_torch", lr=1e-3)
    schedule = make_schedule("linear", num_warmup_steps=2, num_training_steps=steps)  # a new rate every step
    state = init_state(model, optimizer, schedule=schedule, seed=0, compile=compile_option)
    losses = []
    for batch in _batches(steps):
        state, out = train_step(state, batch, max_grad_norm=1.0)
        losses.append(out.loss.item())
    return losses


def test_compiled_steps_match_eager_and_a_changing_learning_rate_never_recompiles():
    """Six steps of a tiny BERT (float64) with a warm-up + linear schedule: compiled losses equal eager within
    1e-4 (here 1e-10), and the backend saw its graphs during step 1 only (no recompilation afterwards)."""
    backend = CountingBackend()
    eager = _run(False)
    first = _run({"backend": backend}, steps=1)
    after_one = backend.graphs
    compiled = _run({"backend": backend}, steps=6)
    assert after_one >= 1
    assert backend.graphs == 2 * after_one  # the second run compiled its own model once, nothing per step
    assert compiled == pytest.approx(eager, abs=1e-10)
    assert first[0] == pytest.approx(eager[0], abs=1e-10)


def test_inductor_compiles_a_plain_module():
    """The default backend (inductor, C++ on CPU) on an MLP returning a dict: losses match eager within 1e-4
    over 4 steps whose learning rate changes, with no recompilation after the first step."""
    graphs = torch._dynamo.utils.counters["stats"]

    def run(compile_option):
        model = mlp(seed=2, dtype=torch.float32)
        optimizer = make_optimizer(model, "adamw_torch", lr=1e-2)
        state = init_state(model, optimizer, schedule=lambda step: 1.0 / (1 + step), seed=0, compile=compile_option)
        g = torch.Generator().manual_seed(3)
        losses, after_first = [], None
        for _ in range(4):
            batch = {"x": torch.randn(8, 8, generator=g), "labels": torch.randint(0, 3, (8,), generator=g)}
            state, out = train_step(state, batch)
            losses.append(out.loss.item())
            after_first = graphs["unique_graphs"] if after_first is None else after_first
        return losses, state, after_first

    torch._dynamo.reset()
    eager, _, _ = run(False)
    compiled, state, after_first = run(True)
    assert compiled == pytest.approx(eager, abs=1e-4)
    assert hasattr(state.model, "_orig_mod") and after_first >= 1
    assert graphs["unique_graphs"] == after_first  # steps 2-4 (new learning rates) compiled nothing


@pytest.mark.parametrize("option", ["yes", {"bakend": "inductor"}, 1])
def test_bad_compile_options_are_named(option):
    model = mlp()
    with pytest.raises(ConfigError, match="init_state\\(compile="):
        init_state(model, torch.optim.SGD(model.parameters(), lr=0.1), compile=option)


def test_trainer_torch_compile_trains_like_eager_and_saves_bare_names(tmp_path):
    """TrainingArguments(torch_compile=True, torch_compile_backend="aot_eager"): the logged losses equal eager
    within 1e-4 and the checkpoint's weights carry the model's own names (no "_orig_mod." prefix)."""
    from safetensors.torch import load_file

    from trainkit import Trainer, TrainingArguments

    rows = [{"input_ids": b["input_ids"][i], "attention_mask": b["attention_mask"][i], "labels": b["labels"][i]}
            for b in _batches(4) for i in range(4)]

    def train(compiled: bool, out: str):
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, max_steps=4, logging_steps=1,
                                 save_strategy="steps", save_steps=4, report_to="none", disable_tqdm=True,
                                 torch_compile=compiled, torch_compile_backend="aot_eager" if compiled else None)
        trainer = Trainer(model=tiny_bert(seed=1), args=args, train_dataset=rows)
        trainer.train()
        return [e["loss"] for e in trainer.state.log_history if "loss" in e]

    eager = train(False, str(tmp_path / "eager"))
    compiled = train(True, str(tmp_path / "compiled"))
    assert compiled == pytest.approx(eager, abs=1e-4)
    names = set(load_file(str(tmp_path / "compiled" / "checkpoint-4" / "model.safetensors")))
    assert names == set(load_file(str(tmp_path / "eager" / "checkpoint-4" / "model.safetensors")))
    assert not any("_orig_mod" in n for n in names)
