"""Tests of trainkit.args: parity with transformers.TrainingArguments, validation, conversion, compatibility.

The reference is transformers' own ``TrainingArguments`` (its ``__post_init__`` included), built on
this machine; nothing is copied from its source into the expectations.
"""

from __future__ import annotations

import dataclasses
import json
import math
from enum import Enum

import attrs
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from trainkit.args import TrainingArguments, from_hf, parse_optim_args, resolve_steps
from trainkit.errors import ConfigError, UnsupportedOptionError

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers cannot build its TrainingArguments without it
from transformers.trainer_callback import DefaultFlowCallback, TrainerControl, TrainerState  # noqa: E402
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType  # noqa: E402
from transformers.training_args import OptimizerNames, ParallelMode  # noqa: E402

HF = transformers.TrainingArguments
# logging_dir: trainkit keeps the field transformers 5 removed (its docs' examples still pass it).
TRAINKIT_ONLY = {"logging_dir", "on_nonfinite"}
SUPPORTED = [f.name for f in attrs.fields(TrainingArguments) if f.name not in TRAINKIT_ONLY]
OUT = "trainkit-test-output"  # never written: neither class creates output_dir

# The deprecated gradient_checkpointing* aliases warn (in HF and trainkit alike); a test asserts it.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


# ---------------------------------------------------------------- strategies

_bools = st.booleans()
OPTIONS = {
    "per_device_train_batch_size": st.integers(1, 64),
    "per_device_eval_batch_size": st.integers(1, 64),
    "gradient_accumulation_steps": st.integers(1, 8),
    "num_train_epochs": st.one_of(st.floats(0.5, 10.0), st.integers(1, 10)),
    "max_steps": st.integers(-1, 1000),
    "learning_rate": st.floats(1e-6, 1.0),
    "lr_scheduler_type": st.sampled_from(["linear", "cosine", "constant", "constant_with_warmup", "inverse_sqrt",
                                          "reduce_lr_on_plateau", SchedulerType.COSINE_WITH_RESTARTS]),
    "lr_scheduler_kwargs": st.sampled_from([None, {"num_cycles": 0.5}, '{"num_cycles": "2", "flag": "true"}']),
    "warmup_steps": st.one_of(st.integers(0, 100), st.floats(0.0, 0.99), st.integers(1, 50).map(float)),
    "optim": st.sampled_from(["adamw_torch", "adamw_torch_fused", "sgd", "adafactor", "adagrad", "rmsprop",
                              OptimizerNames.SGD]),
    "optim_args": st.sampled_from([None, "momentum=0.9", "momentum=0.9, nesterov=True"]),
    "weight_decay": st.floats(0.0, 0.5),
    "adam_beta1": st.floats(0.0, 0.99),
    "adam_beta2": st.floats(0.0, 0.999),
    "adam_epsilon": st.floats(0.0, 1e-3),
    "max_grad_norm": st.floats(0.0, 10.0),
    "label_smoothing_factor": st.floats(0.0, 0.99),
    "bf16": _bools,
    "fp16": _bools,
    "activation_checkpointing": st.sampled_from([None, True, False]),
    "activation_checkpointing_kwargs": st.sampled_from([None, {"use_reentrant": False}]),
    "gradient_checkpointing": st.sampled_from([None, True, False]),
    "gradient_checkpointing_kwargs": st.sampled_from([None, {"use_reentrant": True}, '{"use_reentrant": "false"}']),
    "torch_compile": _bools,
    "torch_compile_backend": st.sampled_from([None, "inductor", "aot_eager"]),
    "torch_compile_mode": st.sampled_from([None, "default", "max-autotune"]),
    "use_cache": _bools,
    "use_cpu": _bools,
    "logging_strategy": st.sampled_from(["no", "steps", "epoch", IntervalStrategy.STEPS]),
    "logging_steps": st.one_of(st.integers(1, 1000), st.floats(0.01, 0.99), st.integers(1, 100).map(float)),
    "logging_first_step": _bools,
    "logging_nan_inf_filter": _bools,
    "disable_tqdm": st.sampled_from([None, True, False]),
    "report_to": st.sampled_from(["none", [], ["none"], "tensorboard", ["tensorboard"], "all"]),
    "run_name": st.sampled_from([None, "run-1"]),
    "eval_strategy": st.sampled_from(["no", "steps", "epoch", IntervalStrategy.EPOCH]),
    "eval_steps": st.one_of(st.none(), st.integers(1, 1000), st.floats(0.01, 0.99), st.integers(0, 100).map(float)),
    "eval_delay": st.one_of(st.integers(0, 10), st.floats(0.0, 5.0)),
    "eval_on_start": _bools,
    "eval_accumulation_steps": st.sampled_from([None, 1, 4]),
    "prediction_loss_only": _bools,
    "include_for_metrics": st.sampled_from([[], ["inputs"], ["loss"], ["inputs", "loss"]]),
    "save_strategy": st.sampled_from(["no", "steps", "epoch", "best", SaveStrategy.STEPS]),
    "save_steps": st.one_of(st.integers(1, 1000), st.floats(0.01, 0.99), st.sampled_from([100, 200, 0.2, 0.4])),
    "save_total_limit": st.sampled_from([None, 0, 1, 3]),
    "save_only_model": _bools,
    "load_best_model_at_end": _bools,
    "metric_for_best_model": st.sampled_from([None, "loss", "eval_loss", "accuracy"]),
    "greater_is_better": st.sampled_from([None, True, False]),
    "seed": st.integers(0, 2**31 - 1),
    "data_seed": st.one_of(st.none(), st.integers(0, 2**31 - 1)),
    "remove_unused_columns": _bools,
    "label_names": st.sampled_from([None, ["labels"], ["start_positions", "end_positions"]]),
    "dataloader_drop_last": _bools,
    "dataloader_num_workers": st.integers(0, 4),
    "dataloader_pin_memory": _bools,
    "dataloader_persistent_workers": _bools,
    "dataloader_prefetch_factor": st.sampled_from([None, 2]),
    "do_train": _bools,
    "do_eval": _bools,
    "do_predict": _bools,
    "resume_from_checkpoint": st.sampled_from([None, "checkpoint-10"]),
    "ignore_data_skip": _bools,
    # HF 5.24 cannot build its arguments with a ddp_backend outside torchrun (accelerate asks the missing
    # process group for its size), so only None is compared here; test_ddp_options covers the rest.
    "ddp_backend": st.none(),
    "ddp_timeout": st.integers(1, 7200),
    "ddp_find_unused_parameters": st.sampled_from([None, True, False]),
    "ddp_bucket_cap_mb": st.sampled_from([None, 1, 25]),
    "ddp_broadcast_buffers": st.sampled_from([None, True, False]),
    "ddp_static_graph": st.sampled_from([None, True, False]),
    "log_on_each_node": _bools,
    "save_on_each_node": _bools,
    "fsdp": st.sampled_from([None, False, True, "full_shard", "shard_grad_op auto_wrap", ["full_shard"]]),
    "fsdp_config": st.sampled_from([None, {"reshard_after_forward": False}, {"fsdp_transformer_layer_cls_to_wrap": "BertLayer"},
                                    {"version": 2}]),
}


@st.composite
def options(draw) -> dict:
    """A random subset of the supported options, each from its valid range (combinations may clash)."""
    opts = draw(st.fixed_dictionaries({}, optional=OPTIONS))
    if opts.get("bf16"):
        opts["use_cpu"] = True  # HF checks bf16 against the device at construction; trainkit leaves it to the Trainer
    # trainkit's one stricter combination rule (nothing would ever be saved), checked in an example test
    assume(not (plain(opts.get("save_strategy", "steps")) == "best" and plain(opts.get("eval_strategy", "no")) == "no"))
    return opts


def test_ddp_options():
    """The DDP fields take HF's values and refuse others with the fix; from_hf carries them over."""
    args = TrainingArguments(ddp_backend="gloo", ddp_timeout=60, ddp_find_unused_parameters=False, ddp_bucket_cap_mb=5)
    assert (args.ddp_backend, args.ddp_timeout, args.ddp_bucket_cap_mb) == ("gloo", 60, 5)
    with pytest.raises(ConfigError) as info:
        TrainingArguments(ddp_backend="glo", ddp_timeout=0)
    message = str(info.value)
    assert "ddp_backend='glo'" in message and "gloo" in message and "ddp_timeout=0" in message
    converted = from_hf(HF(output_dir=OUT, ddp_timeout=60, ddp_find_unused_parameters=True, save_on_each_node=True))
    assert (converted.ddp_timeout, converted.ddp_find_unused_parameters, converted.save_on_each_node) == (60, True, True)


def test_the_strategies_cover_every_supported_field():
    assert set(OPTIONS) | {"output_dir"} == set(SUPPORTED)


# ---------------------------------------------------------------- properties


@given(opts=options())
def test_trainkit_and_transformers_agree_on_every_supported_field(opts):
    """For any supported options: HF accepts them iff trainkit does; then ``from_hf(HF(**opts))`` equals
    ``TrainingArguments(**opts)``, and each field equals HF's post-``__post_init__`` value (enums by value).
    The documented exceptions (docs/errors.md): trainkit refuses at construction what HF lets fail later,
    fp16 without a CUDA device and lr_scheduler_kwargs the schedule does not take."""
    from trainkit.schedules import _TAKES

    schedule = plain(opts.get("lr_scheduler_type", "linear"))
    if opts.get("fp16") is True and opts.get("bf16") is not True and (opts.get("use_cpu") is True or not torch.cuda.is_available()):
        with pytest.raises(ConfigError, match="fp16=True"):
            TrainingArguments(output_dir=OUT, **opts)
        return
    kwargs = opts.get("lr_scheduler_kwargs")
    if isinstance(kwargs, str) and kwargs.startswith("{"):  # HF's JSON-string form
        kwargs = json.loads(kwargs)
    if isinstance(kwargs, dict) and schedule in _TAKES and set(kwargs) - set(_TAKES[schedule]):
        with pytest.raises(ConfigError, match="lr_scheduler_kwargs="):
            TrainingArguments(output_dir=OUT, **opts)
        return
    try:
        hf = HF(output_dir=OUT, **opts)
    except ValueError:
        with pytest.raises(ConfigError):
            TrainingArguments(output_dir=OUT, **opts)
        return
    tk = TrainingArguments(output_dir=OUT, **opts)
    if plain(opts.get("report_to")) == "all":  # trainkit's one addition: its own "jsonl" log
        assert tk.report_to[-1] == "jsonl"
        tk = attrs.evolve(tk, report_to=tk.report_to[:-1])
    assert from_hf(hf) == tk
    for name in SUPPORTED:
        ours, theirs = getattr(tk, name), plain(getattr(hf, name))
        assert ours == theirs and type(ours) is type(theirs), name
        assert not isinstance(ours, Enum), name


@given(opts=options(), name=st.sampled_from(SUPPORTED))
def test_fields_cannot_be_assigned(opts, name):
    """Frozen: assigning any field of any valid instance raises and leaves the value unchanged."""
    try:
        tk = TrainingArguments(**opts)
    except ConfigError:
        assume(False)
    before = getattr(tk, name)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(tk, name, 1)
    assert getattr(tk, name) == before


@given(opts=options())
def test_json_round_trips_and_rebuilding_is_identity(opts):
    """``json.loads(to_json_string())`` equals ``to_dict()``, and ``TrainingArguments(**to_dict())`` is equal:
    the normalisations are idempotent, so a checkpoint's JSON rebuilds the same arguments."""
    try:
        tk = TrainingArguments(**opts)
    except ConfigError:
        assume(False)
    d = tk.to_dict()
    assert json.loads(tk.to_json_string()) == d
    assert TrainingArguments(**d) == tk


# One invalid value per field; none hides another (e.g. no strategy that switches a steps check off).
INVALID = {
    "per_device_train_batch_size": 0,
    "per_device_eval_batch_size": -1,
    "gradient_accumulation_steps": 0,
    "num_train_epochs": math.inf,
    "max_steps": 1.5,
    "learning_rate": -1e-3,
    "lr_scheduler_type": "cosin",
    "lr_scheduler_kwargs": "{not json",
    "warmup_steps": -1,
    "optim": "adamw_troch",
    "optim_args": "momentum",
    "weight_decay": -0.1,
    "adam_beta1": 1.5,
    "adam_beta2": -0.1,
    "adam_epsilon": -1.0,
    "max_grad_norm": math.nan,
    "label_smoothing_factor": 1.0,
    "bf16": "yes",
    "output_dir": 3,
    "logging_steps": 0,
    "report_to": [3],
    "eval_strategy": "epochs",
    "eval_delay": -1,
    "eval_accumulation_steps": 0,
    "include_for_metrics": ["input"],
    "save_steps": -5,
    "save_total_limit": -1,
    "seed": "42",
    "data_seed": 1.5,
    "label_names": "labels",
    "dataloader_num_workers": -1,
}


@given(names=st.lists(st.sampled_from(sorted(INVALID)), min_size=1, unique=True))
def test_every_invalid_option_is_reported_in_one_error(names):
    """For any set of k invalid options, one ConfigError (a ValueError) lists exactly k problems,
    each on a line that starts with its field name and value."""
    with pytest.raises(ConfigError) as info:
        TrainingArguments(**{n: INVALID[n] for n in names})
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"has {len(names)} invalid option" in message
    for name in names:
        assert f"\n  - {name}=" in message, name


@given(value=st.one_of(st.floats(0.001, 0.999), st.integers(1, 1000)), max_steps=st.integers(1, 10_000))
def test_resolve_steps_matches_trainer_state(value, max_steps):
    """``resolve_steps`` equals what HF's ``TrainerState.compute_steps`` stores (a ratio below 1 is ceil'ed)."""
    state = TrainerState()
    state.compute_steps(HF(output_dir=OUT, logging_steps=value, eval_steps=value, save_steps=value), max_steps)
    assert resolve_steps(value, max_steps) == state.logging_steps == state.eval_steps == state.save_steps


# ---------------------------------------------------------------- examples: defaults and derived values


def test_defaults_equal_transformers_defaults():
    tk, hf = TrainingArguments(), HF()
    for name in SUPPORTED:
        ours, theirs = getattr(tk, name), plain(getattr(hf, name))
        assert ours == theirs and type(ours) is type(theirs), name
    assert tk.output_dir == "trainer_output"
    assert tk.optim == plain(hf.optim)  # "adamw_torch_fused" from torch 2.8 on


@pytest.mark.parametrize(
    "opts",
    [
        {"eval_strategy": "steps"},
        {"eval_strategy": "steps", "logging_steps": 0.05},
        {"eval_strategy": "steps", "logging_steps": 40.0, "eval_steps": 0},
        {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True},
        {"eval_strategy": "steps", "load_best_model_at_end": True, "metric_for_best_model": "accuracy"},
        {"eval_strategy": "steps", "metric_for_best_model": "eval_loss"},
        {"eval_strategy": "epoch", "lr_scheduler_type": "reduce_lr_on_plateau"},
        {"eval_strategy": "steps", "lr_scheduler_type": "greedy", "greater_is_better": True},
        {"torch_compile_mode": "reduce-overhead"},
        {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}},
        {"activation_checkpointing": True},
        {"use_cpu": True},
        {"report_to": "tensorboard"},
        {"output_dir": "~/runs/a"},
    ],
)
def test_derived_defaults_equal_transformers(opts):
    hf, tk = HF(**opts), TrainingArguments(**opts)
    derived = ["eval_steps", "metric_for_best_model", "greater_is_better", "do_eval", "torch_compile",
               "torch_compile_backend", "activation_checkpointing", "gradient_checkpointing",
               "gradient_checkpointing_kwargs", "dataloader_pin_memory", "report_to", "output_dir", "disable_tqdm"]
    for name in derived:
        assert getattr(tk, name) == plain(getattr(hf, name)), name
    assert from_hf(hf) == tk


def test_enums_are_stored_as_plain_strings():
    tk = TrainingArguments(eval_strategy=IntervalStrategy.STEPS, save_strategy=SaveStrategy.STEPS, eval_steps=50,
                           lr_scheduler_type=SchedulerType.COSINE, optim=OptimizerNames.SGD)
    for name, value in [("eval_strategy", "steps"), ("save_strategy", "steps"), ("lr_scheduler_type", "cosine"),
                        ("optim", "sgd")]:
        assert type(getattr(tk, name)) is str and getattr(tk, name) == value
    assert tk.eval_strategy == IntervalStrategy.STEPS  # HF callbacks compare with the enum: str enums compare equal


def test_report_to_none_means_no_integration():
    """Documented difference: HF 5.24 turns report_to=None into [None], which its Trainer then rejects."""
    assert TrainingArguments(report_to=None).report_to == []
    assert from_hf(HF(output_dir=OUT, report_to=None)).report_to == []


def test_deprecated_checkpointing_alias_warns_like_transformers():
    with pytest.warns(FutureWarning, match="gradient_checkpointing` is deprecated"):
        tk = TrainingArguments(gradient_checkpointing=True)
    assert tk.activation_checkpointing is tk.gradient_checkpointing is True


def test_warmup_ratio_semantics_match_get_warmup_steps():
    for warmup in (0, 0.1, 0.25, 0.999, 1, 7, 7.0, 2.5):
        tk, hf = TrainingArguments(warmup_steps=warmup), HF(output_dir=OUT, warmup_steps=warmup)
        for total in (0, 1, 95, 1000):
            assert tk.warmup_steps_for(total) == tk.get_warmup_steps(total) == hf.get_warmup_steps(total)
    assert TrainingArguments(warmup_steps=0.1).warmup_steps_for(95) == 10
    assert not hasattr(HF(), "warmup_ratio")  # removed in transformers 5: warmup_steps < 1 is the ratio


def test_ratio_logging_steps():
    tk = TrainingArguments(logging_steps=0.1, eval_strategy="steps")
    assert tk.eval_steps == 0.1 and tk.resolve_steps(tk.logging_steps, 95) == resolve_steps(0.1, 95) == 10


# ---------------------------------------------------------------- examples: validation


@pytest.mark.parametrize(
    ("opts", "fields"),
    [
        ({"fp16": True, "bf16": True}, ["fp16", "bf16"]),
        ({"num_train_epochs": 0}, ["num_train_epochs", "max_steps"]),
        ({"logging_strategy": "step"}, ["logging_strategy", "'steps'"]),
        ({"save_strategy": "bestest"}, ["save_strategy", "'best'"]),
        ({"eval_strategy": "steps", "logging_steps": 0}, ["eval_steps", "logging_steps"]),
        ({"logging_steps": 2.5}, ["logging_steps", "logging_steps=2"]),
        ({"load_best_model_at_end": True, "eval_strategy": "epoch"}, ["eval_strategy", "save_strategy"]),
        ({"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 30, "save_steps": 100},
         ["save_steps", "eval_steps"]),
        ({"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 100},
         ["save_steps", "eval_steps"]),
        ({"save_strategy": "best"}, ["save_strategy", "eval_strategy"]),
        ({"lr_scheduler_type": "reduce_lr_on_plateau"}, ["lr_scheduler_type", "eval_strategy"]),
        ({"dataloader_prefetch_factor": 2}, ["dataloader_prefetch_factor", "dataloader_num_workers"]),
        ({"learning_rate": math.inf}, ["learning_rate"]),
        ({"optim": "adamw_bnb_8bit"}, ["optim", "OPTIMIZER_NAMES"]),
    ],
)
def test_invalid_combinations_name_their_fields(opts, fields):
    with pytest.raises(ConfigError) as info:
        TrainingArguments(**opts)
    message = str(info.value)
    assert "expected" in message and "Fix:" in message
    for field in fields:
        assert field in message


def test_load_best_rules_agree_with_transformers():
    """HF's save/eval step rules (ratios and counts not mixed; multiples to 6 decimals) accept the same cases."""
    for eval_steps, save_steps in [(50, 100), (50, 120), (0.1, 0.2), (0.1, 0.25), (0.1, 100), (10, 0.5), (0.3, 0.9)]:
        opts = {"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": eval_steps,
                "save_steps": save_steps}
        try:
            HF(output_dir=OUT, **opts)
        except ValueError:
            with pytest.raises(ConfigError):
                TrainingArguments(**opts)
        else:
            TrainingArguments(**opts)


# ---------------------------------------------------------------- examples: from_hf


# (field, value, set after construction: HF cannot build these here without their optional package)
UNSUPPORTED = [
    ("deepspeed", "ds_config.json", True),
    ("push_to_hub", True, False),
    ("hub_model_id", "me/model", False),
    ("train_sampling_strategy", "group_by_length", False),
    ("full_determinism", True, False),
    ("auto_find_batch_size", True, False),
    ("include_num_input_tokens_seen", True, False),
    ("neftune_noise_alpha", 5.0, False),
    ("average_tokens_across_devices", False, False),
    ("tf32", False, False),
]


@pytest.mark.parametrize(("field", "value", "after"), UNSUPPORTED)
def test_unsupported_options_raise_naming_them(field, value, after):
    assert field not in SUPPORTED
    hf = HF(output_dir=OUT) if after else HF(output_dir=OUT, **{field: value})
    if after:
        setattr(hf, field, value)
    with pytest.raises(UnsupportedOptionError) as info:
        from_hf(hf)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert f"  - {field}=" in message and "trainkit does not support" in message and "default" in message


def _changed(value: object) -> object:
    """Some value other than ``value``, of a plausible type."""
    if isinstance(value, bool) or value is None:
        return not value if isinstance(value, bool) else "x"
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    return None


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(HF) if f.name not in SUPPORTED])
def test_every_unsupported_field_is_refused_when_changed(field):
    """Whatever HF field trainkit lacks, changing it on a built HF instance makes from_hf refuse it."""
    hf = HF(output_dir=OUT)
    setattr(hf, field, _changed(getattr(hf, field)))
    with pytest.raises(UnsupportedOptionError, match=f"\n  - {field}="):
        from_hf(hf)


def test_all_unsupported_options_are_listed_in_one_error():
    hf = HF(output_dir=OUT, push_to_hub=True, full_determinism=True, learning_rate=1e-3)
    with pytest.raises(UnsupportedOptionError) as info:
        from_hf(hf)
    assert "push_to_hub=True (default False)" in str(info.value)
    assert "full_determinism=True (default False)" in str(info.value)


def test_from_hf_accepts_subclasses_and_rejects_other_objects():
    assert from_hf(transformers.Seq2SeqTrainingArguments(output_dir=OUT)) == TrainingArguments(output_dir=OUT)
    with pytest.raises(UnsupportedOptionError, match="predict_with_generate"):
        from_hf(transformers.Seq2SeqTrainingArguments(output_dir=OUT, predict_with_generate=True))
    with pytest.raises(ConfigError, match="expected a transformers.TrainingArguments"):
        from_hf({"learning_rate": 1e-3})


def test_from_hf_reports_trainkit_invalid_values():
    with pytest.raises(ConfigError, match="optim='adamw_torch_xla'"):
        from_hf(HF(output_dir=OUT, optim="adamw_torch_xla"))
    with pytest.raises(UnsupportedOptionError, match=r"(?s)push_to_hub=True.*Also.*optim='adamw_torch_xla'"):
        from_hf(HF(output_dir=OUT, optim="adamw_torch_xla", push_to_hub=True))


# ---------------------------------------------------------------- examples: compatibility surface


def test_hf_fields_fall_back_to_transformers_defaults():
    tk, hf = TrainingArguments(), HF()
    for name in ("hub_model_id", "deepspeed", "fsdp", "debug", "hub_strategy", "log_level", "accelerator_config"):
        assert getattr(tk, name) == getattr(hf, name), name
    tk.debug.append("x")  # a copy: the cached default is not changed
    assert tk.debug == []


def test_unknown_names_raise_attribute_error_with_a_hint():
    tk = TrainingArguments()
    with pytest.raises(AttributeError, match="'no_such_option'"):
        tk.no_such_option  # noqa: B018
    with pytest.raises(AttributeError, match="did you mean 'learning_rate'"):
        tk.learning_rat  # noqa: B018
    with pytest.raises(AttributeError, match="removed in transformers 5"):
        tk.warmup_ratio  # noqa: B018
    assert tk.logging_dir is None and TrainingArguments(logging_dir="./logs").logging_dir == "./logs"
    with pytest.raises(AttributeError, match="attrs.evolve"):
        tk.set_training  # noqa: B018
    assert not hasattr(tk, "_private") and not hasattr(tk, "__array__")


def test_process_and_device_properties():
    tk = TrainingArguments(per_device_train_batch_size=4, per_device_eval_batch_size=16, use_cpu=True)
    assert (tk.train_batch_size, tk.eval_batch_size) == (4, 16)
    assert (tk.world_size, tk.process_index, tk.local_process_index) == (1, 0, 0)
    assert tk.should_log and tk.should_save
    assert tk.device.type == "cpu" and tk.n_gpu == 0
    assert tk.parallel_mode == ParallelMode.NOT_PARALLEL
    assert TrainingArguments(bf16=True).mixed_precision == "bf16"
    with tk.main_process_first(desc="map"):
        pass


def test_transformers_callbacks_read_trainkit_arguments():
    tk = TrainingArguments(logging_strategy="steps", logging_steps=0.1, eval_strategy="steps", save_steps=0.2,
                           logging_first_step=True)
    state = TrainerState()
    state.compute_steps(tk, 100)
    assert (state.logging_steps, state.eval_steps, state.save_steps) == (10, 10, 20)
    control = TrainerControl()
    state.global_step = 20
    DefaultFlowCallback().on_step_end(tk, state, control)
    assert control.should_log and control.should_evaluate and control.should_save
    assert json.loads(tk.to_sanitized_dict()["report_to"]) == []


def test_to_json_string_names_a_field_that_is_not_json():
    tk = TrainingArguments(lr_scheduler_type="cosine", lr_scheduler_kwargs={"num_cycles": print})
    with pytest.raises(ConfigError, match="lr_scheduler_kwargs="):
        tk.to_json_string()


def test_parse_optim_args():
    assert parse_optim_args("betas1=0.9, eps = 1e-8,amsgrad=true,name=x,none=None") == {
        "betas1": 0.9, "eps": 1e-8, "amsgrad": True, "name": "x", "none": None}
    assert parse_optim_args(None) == parse_optim_args("") == {}
    assert TrainingArguments(optim="sgd", optim_args="momentum=0.9").optim_kwargs() == {"momentum": 0.9}
    with pytest.raises(ConfigError, match="not key=value"):
        parse_optim_args("momentum")

