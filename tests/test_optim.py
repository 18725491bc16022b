"""Tests of ``trainkit.optim``: parameter groups, the optimizer registry, errors.

transformers' ``TrainingArguments`` cannot be built without ``accelerate`` (not a dependency), so
the HF reference is computed by calling ``Trainer.get_decay_parameter_names`` /
``Trainer.create_optimizer`` on a stand-in ``self`` whose ``args`` holds ``TrainingArguments``'
field defaults: the same code the Trainer runs, without a Trainer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from trainkit.errors import ConfigError
from trainkit import fork, init_state, train_step
from trainkit.optim import (
    OPTIMIZER_NAMES,
    decay_parameter_names,
    make_optimizer,
    needs_create_graph,
    param_groups,
)

HF_NAMES = ["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop"]
# LBFGS and SparseAdam always; Muon because the tiny model has 1-D parameters.
REFUSED = {"lbfgs", "torch.optim.LBFGS", "sparseadam", "torch.optim.SparseAdam", "muon", "torch.optim.Muon"}


# ---------------------------------------------------------------- transformers' reference


@functools.cache
def _hf() -> tuple[type, dict]:
    from transformers import Trainer, TrainingArguments

    fields = dataclasses.fields(TrainingArguments)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    return Trainer, defaults


def hf_decay_names(model: nn.Module) -> list[str]:
    trainer, _ = _hf()
    return trainer.get_decay_parameter_names(None, model)  # does not use self


def hf_optimizer(model: nn.Module, **args: object) -> torch.optim.Optimizer:
    """What ``transformers.Trainer.create_optimizer`` builds for ``TrainingArguments(**args)``."""
    trainer, defaults = _hf()
    fake = types.SimpleNamespace(
        optimizer=None,
        model=model,
        args=types.SimpleNamespace(**{**defaults, **args}),
        optimizer_cls_and_kwargs=None,
        get_decay_parameter_names=hf_decay_names,
        get_optimizer_cls_and_kwargs=trainer.get_optimizer_cls_and_kwargs,
    )
    return trainer.create_optimizer(fake)


def groups_summary(optimizer: torch.optim.Optimizer) -> list[tuple[list[int], dict]]:
    """Each non-empty group as (ids of its parameters, its other settings)."""
    return [
        ([id(p) for p in g["params"]], {k: v for k, v in g.items() if k != "params"})
        for g in optimizer.param_groups
        if g["params"]
    ]


# ---------------------------------------------------------------- random models

NAMES = ["attn", "mlp", "norm", "layer_norm", "LayerNorm", "ln_f", "RMSNorm", "bias_proj", "Norm",
         "normalizer", "q_norm", "enorm", "head", "emb", "scale"]  # fmt: skip


class NormWithProjection(nn.LayerNorm):
    """A LayerNorm subclass with a child: transformers excludes everything inside it."""

    def __init__(self) -> None:
        super().__init__(2)
        self.proj = nn.Linear(2, 2)


@st.composite
def modules(draw: st.DrawFn, depth: int = 0, pool: dict | None = None) -> nn.Module:
    """A random module tree; ``pool`` holds earlier modules and parameters to tie to."""
    pool = {"modules": [], "params": []} if pool is None else pool
    root = nn.Module()
    kinds = ["linear", "layernorm", "rmsnorm", "embedding", "param", "ln_child", "shared", "tied"]
    kinds += ["container"] if depth < 2 else []
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=4)):
        kind = draw(st.sampled_from(kinds))
        if kind in ("param", "tied"):
            tie = kind == "tied" and pool["params"]  # may tie two names of one module
            param = draw(st.sampled_from(pool["params"])) if tie else nn.Parameter(torch.randn(2))
            root.register_parameter(name, param)
            pool["params"].append(param)
            continue
        if kind == "shared" and pool["modules"]:
            child = draw(st.sampled_from(pool["modules"]))  # a shared module: two names for its parameters
        elif kind == "container":
            child = draw(modules(depth + 1, pool))
        else:
            child = {
                "linear": lambda: nn.Linear(2, 2, bias=draw(st.booleans())),
                "layernorm": lambda: nn.LayerNorm(
                    2, elementwise_affine=draw(st.booleans()), bias=draw(st.booleans())
                ),
                "rmsnorm": lambda: nn.RMSNorm(2),
                "embedding": lambda: nn.Embedding(3, 2),
                "ln_child": NormWithProjection,
            }.get(kind, lambda: nn.Linear(2, 2))()
            pool["modules"].append(child)
        root.add_module(name, child)
    return root


@st.composite
def models(draw: st.DrawFn) -> nn.Module:
    model = draw(modules())
    for p in model.parameters():
        p.requires_grad_(draw(st.booleans()))
    return model


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


# ---------------------------------------------------------------- properties of the groups


@given(models(), st.floats(0.0, 1.0))
def test_groups_partition_the_trainable_parameters(model: nn.Module, weight_decay: float) -> None:
    """The groups hold each trainable parameter exactly once, no frozen one, none empty, in
    named_parameters() order; a model without trainable parameters is a ConfigError."""
    if not trainable(model):
        with pytest.raises(ConfigError, match="no trainable parameters"):
            param_groups(model, weight_decay=weight_decay)
        return
    groups = param_groups(model, weight_decay=weight_decay)
    assert all(g["params"] for g in groups) and 1 <= len(groups) <= 2
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for _, p in trainable(model))
    assert len(ids) == len(set(ids))
    order = {id(p): i for i, (_, p) in enumerate(model.named_parameters())}
    for g in groups:
        assert [order[id(p)] for p in g["params"]] == sorted(order[id(p)] for p in g["params"])


@given(models())
def test_decay_names_equal_transformers(model: nn.Module) -> None:
    """decay_parameter_names equals transformers.Trainer.get_decay_parameter_names, list for list."""
    assert decay_parameter_names(model) == hf_decay_names(model)


@given(models(), st.floats(0.0, 1.0))
def test_groups_equal_what_transformers_trainer_builds(model: nn.Module, weight_decay: float) -> None:
    """make_optimizer(model, "adamw_torch") has the parameter groups (same parameters, same order,
    same settings, weight_decay for the decay group and 0.0 for the other) that
    transformers.Trainer.create_optimizer builds with optim="adamw_torch", empty groups aside."""
    assume(trainable(model))
    ours = make_optimizer(model, "adamw_torch", lr=5e-5, weight_decay=weight_decay)
    theirs = hf_optimizer(model, optim="adamw_torch", learning_rate=5e-5, weight_decay=weight_decay)
    assert groups_summary(ours) == groups_summary(theirs)
    decay = set(decay_parameter_names(model))
    for g in ours.param_groups:
        in_group = [n for n, p in trainable(model) if any(p is q for q in g["params"])]
        assert {weight_decay if n in decay else 0.0 for n in in_group} == {g["weight_decay"]}


def test_tied_parameters_appear_once_under_their_first_name() -> None:
    model = nn.Module()
    model.emb, model.norm, model.head = nn.Embedding(5, 2), nn.Module(), nn.Linear(2, 5, bias=False)
    model.head.weight = model.emb.weight
    groups = param_groups(model, weight_decay=0.1)
    assert [[id(p) for p in g["params"]] for g in groups] == [[id(model.emb.weight)]]
    assert decay_parameter_names(model) == ["emb.weight", "head.weight"] == hf_decay_names(model)
    model.head.register_parameter("scale", model.head.weight)  # one parameter, two names in one module
    assert decay_parameter_names(model) == ["emb.weight", "head.weight", "head.scale"] == hf_decay_names(model)
    assert [len(g["params"]) for g in param_groups(model, weight_decay=0.1)] == [1]


# ---------------------------------------------------------------- every name steps


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 1))


def _mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def step_once(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One trainkit.train_step (which must honour create_graph for Adahessian); asserts that a
    parameter changed and all stay finite."""
    batch = torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), torch.ones(16, 1)
    before = [p.detach().clone() for p in model.parameters()]
    state = init_state(model, optimizer, seed=0)
    assert state.create_graph == needs_create_graph(optimizer)
    state, out = train_step(state, batch, loss_fn=_mse)
    assert not out.skipped and state.progress.step == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("name", ["adahessian", "lookahead"])
def test_random_optimizers_are_reproducible_through_train_step(name: str) -> None:
    """Adahessian draws random probes inside optimizer.step(); train_step seeds that draw from
    (seed, step), so two forks of one state give bitwise-equal parameters."""
    model = tiny_model()
    kwargs = {"base": "adahessian"} if name == "lookahead" else {}
    state = init_state(model, make_optimizer(model, name, lr=1e-2, **kwargs), seed=3)
    batch = torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), torch.ones(16, 1)
    a, b = state, fork(state)
    for _ in range(2):
        a, _ = train_step(a, batch, loss_fn=_mse)
        b, _ = train_step(b, batch, loss_fn=_mse)
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.filterwarnings("ignore:This overload of addcmul_ is deprecated")  # pytorch_ranger's Ranger
@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_every_name_steps_or_is_refused(name: str) -> None:
    model = tiny_model()
    if name in REFUSED:
        with pytest.raises(ConfigError, match=f"name='{name}'"):
            make_optimizer(model, name, lr=1e-2)
        return
    optimizer = make_optimizer(model, name, lr=1e-2)
    step_once(model, optimizer)
    optimizer.load_state_dict(optimizer.state_dict())  # checkpointing works (Lookahead included)


@pytest.mark.parametrize("name", ["muon", "torch.optim.Muon"])
def test_muon_steps_when_every_trainable_parameter_is_2d(name: str) -> None:
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.Tanh(), nn.Linear(8, 1, bias=False))
    optimizer = make_optimizer(model, name, lr=1e-2, weight_decay=0.1)
    assert isinstance(optimizer, torch.optim.Muon)
    step_once(model, optimizer)


def test_registry_covers_torch_and_torch_optimizer() -> None:
    import torch_optimizer

    torch_classes = [n for n in torch.optim.__all__ if isinstance(getattr(torch.optim, n), type)]
    torch_classes = [n for n in torch_classes if issubclass(getattr(torch.optim, n), torch.optim.Optimizer)]
    expected = set(HF_NAMES) | {f"torch.optim.{n}" for n in torch_classes if n != "Optimizer"}
    expected |= {f"torch_optimizer.{n}" for n in torch_optimizer.__all__ if n != "get"}
    assert expected <= set(OPTIMIZER_NAMES)
    assert list(OPTIMIZER_NAMES) == sorted(set(OPTIMIZER_NAMES))
    assert {"adam", "nadam", "muon", "lamb", "yogi", "madgrad", "lookahead"} <= set(OPTIMIZER_NAMES)
    m = tiny_model()
    assert type(make_optimizer(m, "radam", lr=1e-3)) is torch.optim.RAdam
    assert type(make_optimizer(m, "torch_optimizer.RAdam", lr=1e-3)) is torch_optimizer.RAdam
    assert type(make_optimizer(m, "torch.optim.Adafactor", lr=1e-3)) is torch.optim.Adafactor


def test_importing_the_module_imports_neither_transformers_nor_torch_optimizer() -> None:
    code = (
        "import sys; import trainkit.optim; "
        "assert 'transformers' not in sys.modules and 'torch_optimizer' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


# ---------------------------------------------------------------- HF names, lookahead, classes


@pytest.mark.parametrize("name", HF_NAMES)
def test_hf_names_build_what_transformers_trainer_builds(name: str) -> None:
    model = tiny_model()
    ours = make_optimizer(model, name, lr=1e-3, weight_decay=0.1)
    theirs = hf_optimizer(model, optim=name, learning_rate=1e-3, weight_decay=0.1)
    assert type(ours) is type(theirs)
    assert groups_summary(ours) == groups_summary(theirs)


def test_hf_adafactor_has_the_trainer_settings() -> None:
    from transformers.optimization import Adafactor

    optimizer = make_optimizer(tiny_model(), "adafactor", lr=1e-3)
    trainer, defaults = _hf()
    args = types.SimpleNamespace(**{**defaults, "optim": "adafactor"})
    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(args)
    assert type(optimizer) is cls is Adafactor
    assert optimizer.defaults == cls(tiny_model().parameters(), **{**kwargs, "lr": 1e-3}).defaults
    assert optimizer.defaults["scale_parameter"] is False and optimizer.defaults["relative_step"] is False


def test_hf_defaults_can_be_overridden() -> None:
    optimizer = make_optimizer(tiny_model(), "adamw_torch", lr=1e-3, betas=(0.9, 0.95), eps=1e-6)
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-6


def test_lookahead_wraps_its_base_and_splits_the_arguments() -> None:
    import torch_optimizer

    model = tiny_model()
    optimizer = make_optimizer(
        model, "lookahead", lr=1e-2, weight_decay=0.1, base="sgd", k=3, alpha=0.25, momentum=0.9
    )
    assert isinstance(optimizer, torch_optimizer.Lookahead)
    assert (optimizer.k, optimizer.alpha) == (3, 0.25)
    assert type(optimizer.optimizer) is torch.optim.SGD and optimizer.optimizer.defaults["momentum"] == 0.9
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert type(make_optimizer(model, "lookahead", lr=1e-3).optimizer) is torch.optim.AdamW  # default base
    step_once(model, optimizer)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_needs_create_graph_sees_adahessian_inside_lookahead() -> None:
    model = tiny_model()
    assert needs_create_graph(make_optimizer(model, "adahessian", lr=0.1))
    wrapped = make_optimizer(model, "lookahead", lr=0.1, base="torch_optimizer.Adahessian")
    assert needs_create_graph(wrapped)
    step_once(model, wrapped)
    assert not needs_create_graph(make_optimizer(model, "lookahead", lr=0.1))
    assert not needs_create_graph(make_optimizer(model, "adamw_torch", lr=0.1))


def test_an_optimizer_class_gets_groups_lr_and_kwargs() -> None:
    model = tiny_model()
    optimizer = make_optimizer(model, torch.optim.SGD, lr=0.1, weight_decay=0.01, momentum=0.9, nesterov=True)
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.defaults["lr"] == 0.1 and optimizer.defaults["nesterov"] is True
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    step_once(model, optimizer)


# ---------------------------------------------------------------- errors


def raises_config_error(*fragments: str, **kwargs: object) -> str:
    """make_optimizer(**kwargs) raises a ConfigError (a ValueError) whose message holds the fragments."""
    kwargs = {"model": tiny_model(), "lr": 1e-3, **kwargs}
    with pytest.raises(ConfigError) as info:
        make_optimizer(**kwargs)
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value)
    return str(info.value)


def test_unknown_name_suggests_close_names() -> None:
    raises_config_error("name='adamw_troch'", "'adamw_torch'", "trainkit.OPTIMIZER_NAMES", name="adamw_troch")
    raises_config_error("name='Lamb'", "'lamb'", name="Lamb")


@pytest.mark.parametrize("name", [3, None, nn.Linear, torch.optim.SGD([torch.zeros(1, requires_grad=True)])])
def test_name_of_a_wrong_type(name: object) -> None:
    expected = "expected an optimizer name (str) or a torch.optim.Optimizer subclass"
    raises_config_error("name=", expected, name=name)


@pytest.mark.parametrize("lr", [0, -1e-3, math.nan, math.inf, "1e-3", True, None])
def test_lr_must_be_a_positive_finite_number(lr: object) -> None:
    raises_config_error(f"lr={lr!r}", "positive finite number", lr=lr)


@pytest.mark.parametrize("weight_decay", [-0.1, math.nan, "0.1"])
def test_weight_decay_must_be_non_negative(weight_decay: object) -> None:
    raises_config_error(f"weight_decay={weight_decay!r}", ">= 0", weight_decay=weight_decay)


def test_a_model_without_trainable_parameters() -> None:
    model = tiny_model().requires_grad_(False)
    raises_config_error("model=Sequential", "no trainable parameters", "requires_grad", model=model)
    raises_config_error("model='gpt2' (str)", "torch.nn.Module", model="gpt2")


def test_unknown_optimizer_kwargs_are_named_with_the_accepted_ones() -> None:
    message = raises_config_error("['betass']", "betas, capturable", "did you mean 'betas'", betass=(0.9, 0.9))
    assert "torch.optim.adamw.AdamW" in message
    raises_config_error("['foo']", "momentum, nesterov", name=torch.optim.SGD, foo=1)


def test_lookahead_argument_errors() -> None:
    raises_config_error(
        "['betas']", "momentum, nesterov", "base, k, alpha", name="lookahead", base="sgd", betas=(0.9, 0.9)
    )
    raises_config_error("k=0", "int >= 1", name="lookahead", k=0)
    raises_config_error("alpha=1.5", "[0, 1]", name="lookahead", alpha=1.5)
    raises_config_error("base='sgdd'", "'sgd'", name="lookahead", base="sgdd")
    raises_config_error("base='lookahead'", name="lookahead", base="lookahead")


def test_refused_optimizers_explain_why() -> None:
    raises_config_error("name='lbfgs'", "closure", name="lbfgs")
    raises_config_error("torch.optim.lbfgs.LBFGS", "closure", name=torch.optim.LBFGS)
    raises_config_error("name='sparseadam'", "sparse gradients", name="sparseadam")
    raises_config_error("name='muon'", "2-D", "'0.bias'", name="muon")


def test_weight_decay_is_not_silently_dropped() -> None:
    raises_config_error("weight_decay=0.1", "no weight decay", name="rprop", weight_decay=0.1)
    optimizer = make_optimizer(tiny_model(), "rprop", lr=1e-3)
    assert len(optimizer.param_groups) == 1 and "weight_decay" not in optimizer.param_groups[0]


def test_values_the_constructor_rejects() -> None:
    with pytest.raises(ConfigError, match="betas") as info:
        make_optimizer(tiny_model(), "adam", lr=1e-3, betas=(1.5, 0.9))
    assert isinstance(info.value.__cause__, ValueError)
