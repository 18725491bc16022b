"""``TrainingArguments``: transformers' training options as one frozen, validated record.

The fields are the ``transformers.TrainingArguments`` (5.x) fields trainkit implements, with HF's
names, defaults and ``__post_init__`` normalisations, so ``TrainingArguments(**opts)`` means what
``transformers.TrainingArguments(**opts)`` means. Design:

* **Frozen.** The loop, the callbacks and the checkpoints read the same arguments; a frozen record
  cannot drift between them, and ``attrs.evolve(args, learning_rate=1e-4)`` builds a new, validated
  one. The values HF derives in ``__post_init__`` are computed once, in ``__attrs_post_init__``, and
  written with ``object.__setattr__`` (the sanctioned way to initialise a frozen attrs instance).
  They are stored values afterwards: ``attrs.evolve`` keeps them, as ``dataclasses.replace`` keeps
  HF's. Lists and dicts are copied in, never shared with the caller; do not mutate them.
* **Every problem at once.** Validation collects every invalid value or combination into one
  :class:`~trainkit.errors.ConfigError`, a line each: field(s), value, what was expected, the fix.
  Device checks (fp16/bf16 support) and file-system checks are the Trainer's, at run time.
* **Unsupported options raise.** :func:`from_hf` converts a ``transformers.TrainingArguments``. An
  HF option trainkit does not implement (DeepSpeed, FSDP, Hub pushing...) set to a non-default value
  raises :class:`~trainkit.errors.UnsupportedOptionError`: ignoring ``deepspeed=...`` would silently
  train another run than the one asked for. "Default" is the value HF itself gives the field when
  only the supported options are passed, so values HF derives from them never count as set.
* **HF defaults for other HF names.** Callbacks and user code written for HF read attributes such
  as ``args.hub_model_id``. By the rule above every unsupported option is at HF's default, so
  ``__getattr__`` answers any other HF field name with the value of a default
  ``transformers.TrainingArguments`` (built once, when first needed); names HF lacks too raise
  ``AttributeError`` with a hint. ``import trainkit.args`` does not import transformers.

Deliberate differences from HF 5.24: ``report_to="all"`` adds trainkit's ``"jsonl"`` log to the
installed integrations; ``report_to=None`` means no integration (HF makes it ``[None]``,
which its Trainer rejects); stricter ranges (learning_rate > 0, batch sizes >= 1, steps > 0, betas in
[0, 1), label_smoothing_factor in [0, 1), known ``include_for_metrics``), and ``save_strategy="best"``
needs an ``eval_strategy`` (without evaluations nothing would ever be saved); devices are CPU or CUDA,
and ``n_gpu`` is at most 1 (no ``nn.DataParallel``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import numbers
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

import attrs
import torch

from trainkit.distributed import BACKENDS as _BACKENDS
from trainkit.errors import ConfigError, ConfigTypeError, UnsupportedOptionError, closest_names
from trainkit.optim import OPTIMIZER_NAMES
from trainkit.schedules import SCHEDULE_NAMES, _foreign_keywords

if TYPE_CHECKING:
    import transformers

__all__ = ["TrainingArguments", "as_training_arguments", "from_hf", "parse_optim_args", "resolve_steps"]

# transformers picks "adamw_torch_fused" when torch >= 2.8 (training_args.py, `default_optim`).
_DEFAULT_OPTIM = "adamw_torch_fused" if tuple(map(int, re.findall(r"\d+", torch.__version__)[:2])) >= (2, 8) \
    else "adamw_torch"  # fmt: skip
_INTERVALS = ("no", "steps", "epoch")
_SAVES = (*_INTERVALS, "best")
_METRIC_SCHEDULERS = ("reduce_lr_on_plateau", "greedy")  # HF steps them on evaluation metrics
_SCHEDULERS = (*SCHEDULE_NAMES, *_METRIC_SCHEDULERS)
_FOR_METRICS = ("inputs", "loss")
_ALIASES = (("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"))  # (deprecated, new)
_REMOVED = {  # names users carry over from transformers 4
    "warmup_ratio": "removed in transformers 5: pass warmup_steps=<a ratio below 1>",
    "overwrite_output_dir": "removed in transformers 5",
    "evaluation_strategy": "renamed eval_strategy",
}
_WHY_UNSUPPORTED = {
    "deepspeed": "trainkit does not integrate DeepSpeed (its distributed path is DDP under torchrun)",
    "push_to_hub": "trainkit does not push to the Hub; call model.push_to_hub() after training",
    "train_sampling_strategy": "trainkit does not support it: its data order is random, seeded by data_seed",
    "full_determinism": "trainkit does not support it: its steps are seeded per step, reproducible on CPU",
}


def resolve_steps(value: float, total_steps: int) -> int:
    """An interval in optimizer steps, as HF's ``TrainerState.compute_steps``: below 1 is a ratio.

    Args:
        value: ``logging_steps``, ``eval_steps`` or ``save_steps``.
        total_steps: the run's total optimizer steps.

    Returns:
        ``math.ceil(total_steps * value)`` when ``value < 1``, else ``int(value)``.

    Example:
        >>> resolve_steps(0.1, 95), resolve_steps(500, 95)
        (10, 500)
    """
    return math.ceil(total_steps * value) if value < 1 else int(value)


def parse_optim_args(text: str | None) -> dict[str, Any]:
    """Parse HF's ``optim_args`` string ``"k=v,k=v"`` (spaces ignored, as HF) into keyword arguments.

    HF hands the values to its optimizers as strings; trainkit passes them to constructors, so each
    value is converted: "true"/"false" to bool, "none" to None, then int, then float, else kept.

    Raises:
        ConfigError: an item is not ``key=value``.

    Example:
        >>> parse_optim_args("momentum=0.9, nesterov=True,dampening = 0")
        {'momentum': 0.9, 'nesterov': True, 'dampening': 0}
    """
    out: dict[str, Any] = {}
    for item in text.replace(" ", "").split(",") if text else []:
        key, sep, raw = item.partition("=")
        if not key or not sep or "=" in raw:
            raise ConfigError(f"optim_args={text!r}: item {item!r} is not key=value. Fix: pass e.g. "
                              "optim_args='momentum=0.9,nesterov=True'.")
        out[key] = {"true": True, "false": False, "none": None}.get(raw.lower(), raw)
        for kind in (int, float):
            with contextlib.suppress(TypeError, ValueError):
                out[key] = kind(out[key]) if isinstance(out[key], str) else out[key]
                break
    return out


def _dist() -> tuple[int, int]:
    """(rank, world size) of the initialised ``torch.distributed`` group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@attrs.frozen(kw_only=True)
class TrainingArguments:
    """The training options trainkit supports, with ``transformers.TrainingArguments``' names and defaults.

    Every field means what HF documents; the HF ``__post_init__`` rules that change behaviour are
    applied: ``output_dir=None`` becomes ``"trainer_output"`` (``~`` expanded); strategies and names
    given as HF enums are stored as their string values; ``*_kwargs`` JSON strings are parsed;
    ``gradient_checkpointing*`` and ``activation_checkpointing*`` mirror each other (the old names
    warn, as in HF); ``disable_tqdm`` defaults to transformers' log level being above WARNING;
    ``do_eval`` is set by an ``eval_strategy``; ``eval_steps`` defaults to ``logging_steps`` under
    the "steps" strategy; ``metric_for_best_model`` defaults to "loss" with ``load_best_model_at_end``
    or a metric-driven scheduler, and ``greater_is_better`` to the name not ending in "loss";
    ``report_to`` becomes a list ("all": the installed integrations; "none"/None: ``[]``; inside
    Kubeflow "kubeflow" is added); steps above 1 become ints; ``torch_compile_mode``/``_backend``
    enable ``torch_compile`` and the backend defaults to "inductor"; ``use_cpu`` turns
    ``dataloader_pin_memory`` off. ``logging_steps``, ``eval_steps``, ``save_steps`` and
    ``warmup_steps`` below 1 are ratios of the total steps (:func:`resolve_steps`,
    :meth:`warmup_steps_for`).

    Raises:
        ConfigError: one error listing every invalid value or combination.

    Example:
        >>> args = TrainingArguments(eval_strategy="steps", logging_steps=50, load_best_model_at_end=True,
        ...                          save_steps=100)
        >>> args.eval_steps, args.metric_for_best_model, args.greater_is_better, args.do_eval
        (50, 'loss', False, True)
        >>> args.learning_rate = 1.0
        Traceback (most recent call last):
        attr.exceptions.FrozenInstanceError: can't set attribute
        >>> TrainingArguments(learning_rate=0, fp16=True, bf16=True)
        Traceback (most recent call last):
        trainkit.errors.ConfigError: TrainingArguments has 2 invalid options:
          - learning_rate=0: expected a finite number > 0. Fix: pass e.g. learning_rate=5e-05 (the default).
          - fp16=True with bf16=True: expected at most one mixed precision. Fix: keep one of them.
    """

    output_dir: str | None = None
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 5e-5
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict[str, Any] | str | None = None
    warmup_steps: float = 0
    optim: str = _DEFAULT_OPTIM
    optim_args: str | None = None
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    label_smoothing_factor: float = 0.0
    bf16: bool = False
    fp16: bool = False
    activation_checkpointing: bool | None = None
    activation_checkpointing_kwargs: dict[str, Any] | str | None = None
    gradient_checkpointing: bool | None = None
    gradient_checkpointing_kwargs: dict[str, Any] | str | None = None
    torch_compile: bool = False
    torch_compile_backend: str | None = None
    torch_compile_mode: str | None = None
    use_cache: bool = False
    use_cpu: bool = False
    logging_strategy: str = "steps"
    logging_steps: float = 500
    logging_first_step: bool = False
    # Removed in transformers 5 but still in its documentation's examples and in 4.x scripts:
    # accepted so they run unchanged; it names the folder for TensorBoard logs.
    logging_dir: str | None = None
    logging_nan_inf_filter: bool = True
    disable_tqdm: bool | None = None
    report_to: str | list[str] | None = "none"
    run_name: str | None = None
    eval_strategy: str = "no"
    eval_steps: float | None = None
    eval_delay: float = 0
    eval_on_start: bool = False
    eval_accumulation_steps: int | None = None
    prediction_loss_only: bool = False
    include_for_metrics: list[str] = attrs.Factory(list)
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    seed: int = 42
    data_seed: int | None = None
    remove_unused_columns: bool = True
    label_names: list[str] | None = None
    dataloader_drop_last: bool = False
    dataloader_num_workers: int = 0
    dataloader_pin_memory: bool = True
    dataloader_persistent_workers: bool = False
    dataloader_prefetch_factor: int | None = None
    # Resume despite a changed batch size, accumulation, world size, dataset length or seed.
    ignore_data_skip: bool = False
    # Multi-process training under torchrun (trainkit.distributed): the process group and DDP's options.
    ddp_backend: str | None = None
    ddp_timeout: int = 1800
    ddp_find_unused_parameters: bool | None = None
    ddp_bucket_cap_mb: int | None = None
    ddp_broadcast_buffers: bool | None = None
    ddp_static_graph: bool | None = None
    log_on_each_node: bool = True
    save_on_each_node: bool = False
    # FSDP2 (trainkit.sharding): True, or HF's legacy "full_shard" / "shard_grad_op" [+ "auto_wrap"].
    fsdp: bool | str | list[str] | None = None
    fsdp_config: dict[str, Any] | str | None = None
    do_train: bool = False  # do_train, do_eval, do_predict and resume_from_checkpoint are for scripts:
    do_eval: bool = False  # HF's Trainer does not read them either.
    do_predict: bool = False
    resume_from_checkpoint: str | None = None
    # trainkit's own: a NaN/inf loss or gradient norm raises NonFiniteError ("raise"), or the update is
    # skipped ("skip": parameters and optimizer untouched, the step not counted). transformers has no such option.
    on_nonfinite: str = "raise"

    def __attrs_post_init__(self) -> None:
        values = {f.name: _copy_in(getattr(self, f.name)) for f in attrs.fields(type(self))}
        _normalise(values)
        for name, value in values.items():  # frozen: the derived values are written once, here
            object.__setattr__(self, name, value)
        problems = _problems(values)
        if problems:
            head = f"TrainingArguments has {len(problems)} invalid option{'s' if len(problems) > 1 else ''}:"
            raise ConfigError("\n  - ".join([head, *problems]))

    # --- HF's read-only surface, for callbacks and user code -------------------------------------

    @property
    def world_size(self) -> int:
        """Processes training together: ``torch.distributed``'s world size once initialised, else 1."""
        return _dist()[1]

    @property
    def process_index(self) -> int:
        """This process's global rank (0 unless ``torch.distributed`` is initialised)."""
        return _dist()[0]

    @property
    def local_process_index(self) -> int:
        """This process's rank on its node (``$LOCAL_RANK`` under ``torchrun``, else 0)."""
        return int(os.environ.get("LOCAL_RANK", "0")) if self.world_size > 1 else 0

    @property
    def should_log(self) -> bool:
        """Whether this process logs: rank 0 of each node (``log_on_each_node``), else global rank 0."""
        return (self.local_process_index if self.log_on_each_node else self.process_index) == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes checkpoints: global rank 0, or rank 0 of each node with
        ``save_on_each_node`` (for nodes that share no file system)."""
        return (self.local_process_index if self.save_on_each_node else self.process_index) == 0

    @property
    def device(self) -> torch.device:
        """``cuda:<local rank>`` when CUDA is available and not ``use_cpu``, else the CPU."""
        if not self.use_cpu and torch.cuda.is_available():
            return torch.device("cuda", self.local_process_index)
        return torch.device("cpu")

    @property
    def n_gpu(self) -> int:
        """GPUs this process uses: 1 on CUDA, else 0 (trainkit never uses ``nn.DataParallel``)."""
        return int(self.device.type == "cuda")

    @property
    def train_batch_size(self) -> int:
        """Examples per micro-batch in this process (HF: per device times ``max(1, n_gpu)``)."""
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        """Examples per evaluation batch in this process."""
        return self.per_device_eval_batch_size

    @property
    def parallel_mode(self) -> Any:
        """HF's ``ParallelMode``: ``DISTRIBUTED`` with several processes, else ``NOT_PARALLEL``."""
        from transformers.training_args import ParallelMode

        return ParallelMode.DISTRIBUTED if self.world_size > 1 else ParallelMode.NOT_PARALLEL

    @property
    def mixed_precision(self) -> str:
        """``"fp16"``, ``"bf16"`` or ``"no"``, as HF's attribute of that name."""
        return "fp16" if self.fp16 else "bf16" if self.bf16 else "no"

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work") -> Iterator[None]:
        """Run the block on the main process first, the others after it (HF's signature; no-op alone)."""
        main = (self.local_process_index if local else self.process_index) == 0
        if self.world_size > 1 and not main:
            torch.distributed.barrier()
        try:
            yield
        finally:
            if self.world_size > 1 and main:
                torch.distributed.barrier()

    def warmup_steps_for(self, total_steps: int) -> int:
        """Warmup steps for ``total_steps`` optimizer steps, as HF's ``get_warmup_steps``.

        Example:
            >>> [TrainingArguments(warmup_steps=w).warmup_steps_for(95) for w in (0.1, 7)]
            [10, 7]
        """
        w = self.warmup_steps
        return int(w) if w >= 1 else math.ceil(total_steps * w)

    get_warmup_steps = warmup_steps_for  # HF's name, for Trainer subclasses that call it
    resolve_steps = staticmethod(resolve_steps)

    def optim_kwargs(self) -> dict[str, Any]:
        """``optim_args`` as keyword arguments (:func:`parse_optim_args`)."""
        return parse_optim_args(self.optim_args)

    def to_dict(self) -> dict[str, Any]:
        """Every field, as plain (deep-copied) values; JSON-serialisable when the ``*_kwargs`` dicts are."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in attrs.fields(type(self))}

    def to_json_string(self) -> str:
        """:meth:`to_dict` as indented JSON, the form checkpoints store (arguments are never pickled).

        Raises:
            ConfigError: a ``*_kwargs`` dict holds a value JSON cannot represent.

        Example:
            >>> import json
            >>> json.loads(TrainingArguments(seed=1).to_json_string())["seed"]
            1
        """
        d = self.to_dict()
        for name, value in d.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"{name}={value!r}: expected JSON-serialisable values ({error}). Fix: use "
                                  "strings, numbers, booleans, None, lists and dicts in it.") from None
        return json.dumps(d, indent=2)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """HF's form for TensorBoard hparams: :meth:`to_dict` plus batch sizes, non-scalars as strings."""
        d = {**self.to_dict(), "train_batch_size": self.train_batch_size, "eval_batch_size": self.eval_batch_size}
        return {k: v if type(v) in (bool, int, float, str) else str(v) for k, v in d.items()}

    def __getattr__(self, name: str) -> Any:
        """Any other ``transformers.TrainingArguments`` field: HF's default (see the module docs).

        Example:
            >>> TrainingArguments().hub_model_id is None
            True
        """
        if name.startswith("_") or name in _FIELD_NAMES:  # protocol probes; slots not yet set
            raise AttributeError(name)
        try:
            defaults = _hf_defaults()
        except ImportError:
            raise AttributeError(f"TrainingArguments has no field {name!r}, and transformers, which "
                                 "would provide HF's default, is not installed.") from None
        if name in defaults:
            return copy.deepcopy(defaults[name])
        import transformers

        if hasattr(transformers.TrainingArguments, name):
            hint = "trainkit does not provide it"
            if name.startswith("set_"):
                hint = "it mutates; build a new record with attrs.evolve(args, <field>=<value>)"
            raise AttributeError(f"transformers.TrainingArguments.{name} exists, but {hint}.")
        near = closest_names(name, [*_FIELD_NAMES, *defaults])
        hint = _REMOVED.get(name, f"did you mean {' or '.join(map(repr, near))}" if near else "check the name")
        raise AttributeError(f"TrainingArguments has no attribute {name!r}, in trainkit or transformers "
                             f"{transformers.__version__}: {hint}.")


_FIELD_NAMES = frozenset(f.name for f in attrs.fields(TrainingArguments))
_attrs_init = TrainingArguments.__init__


@functools.wraps(_attrs_init)
def _checked_init(self: TrainingArguments, *args: Any, **kwargs: Any) -> None:
    """attrs' ``__init__``, after naming what it would refuse with a bare TypeError: positional values
    (output_dir included: HF's only positional field), transformers' options trainkit lacks, and typos."""
    if args:
        raise ConfigTypeError(f"TrainingArguments({_show(args[0])}, ...): options are keyword-only. Fix: "
                              f"TrainingArguments(output_dir={_show(args[0])}, ...).")
    unknown = [name for name in kwargs if name not in _FIELD_NAMES]
    if unknown:
        name = unknown[0]
        if name in _hf_defaults():
            why = _WHY_UNSUPPORTED.get(name, "trainkit does not support it")
            raise UnsupportedOptionError(f"TrainingArguments({name}={_show(kwargs[name])}): a transformers option; {why}. "
                                         f"Fix: remove {name}.")
        near = closest_names(name, _FIELD_NAMES)
        raise ConfigTypeError(f"TrainingArguments({name}={_show(kwargs[name])}): no such option. Fix: "
                              + (f"did you mean {' or '.join(map(repr, near))}?" if near else "remove it; docs/migrating.md lists the options."))
    _attrs_init(self, **kwargs)


TrainingArguments.__init__ = _checked_init  # type: ignore[method-assign]
_DEFAULTS = {f.name: f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
             for f in attrs.fields(TrainingArguments)}  # fmt: skip


# --- normalisation: HF's __post_init__ rules, on a dict of field values -----------------------------


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value  # HF's strategy/name enums are str enums


def _copy_in(value: Any) -> Any:
    """Enums to values; lists and dicts deep-copied, tuples to lists (never shared with the caller)."""
    return list(copy.deepcopy(value)) if isinstance(value, tuple) else copy.deepcopy(value) \
        if isinstance(value, (list, dict)) else _plain(value)  # fmt: skip


def _convert_str_dict(d: dict[str, Any]) -> dict[str, Any]:
    """HF's ``_convert_str_dict``: "true"/"false", digit strings and decimals become bool/int/float."""
    for key, value in d.items():
        if isinstance(value, dict):
            d[key] = _convert_str_dict(value)
        elif isinstance(value, str) and value.lower() in ("true", "false"):
            d[key] = value.lower() == "true"
        elif isinstance(value, str) and value.isdigit():
            d[key] = int(value)
        elif isinstance(value, str) and value.replace(".", "", 1).isdigit():
            d[key] = float(value)
    return d


def _hf_log_level() -> int:
    """transformers' logger level (before its import: what it will set, $TRANSFORMERS_VERBOSITY or WARNING)."""
    if logging.getLogger("transformers").level == logging.NOTSET:
        level = logging.getLevelName(os.environ.get("TRANSFORMERS_VERBOSITY", "warning").upper())
        return level if isinstance(level, int) else logging.WARNING
    return logging.getLogger("transformers.training_args").getEffectiveLevel()


# fsdp_config keys trainkit implements, and the only value it takes for each of the others HF knows.
_FSDP_KEYS = ("reshard_after_forward", "transformer_layer_cls_to_wrap", "version")
_FSDP_FIXED = {"min_num_params": 0, "xla": False, "xla_fsdp_v2": False, "xla_fsdp_grad_ckpt": False,
               "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "FULL_STATE_DICT", "cpu_offload": False,
               "activation_checkpointing": False, "cpu_ram_efficient_loading": False}
_FSDP_OPTIONS = {"full_shard": True, "shard_grad_op": False, "auto_wrap": None}  # -> reshard_after_forward


def _normalise_fsdp(v: dict[str, Any]) -> None:
    """HF's ``_process_fsdp_args``: a truthy ``fsdp`` becomes True and its options move into ``fsdp_config``."""
    if not v["fsdp"]:
        return
    config = v["fsdp_config"]
    if config is None:
        config = {}
    elif isinstance(config, str):  # HF reads a JSON file
        with open(config, encoding="utf-8") as f:
            config = json.load(f)
    if not isinstance(config, dict):
        return  # validation reports it
    config = {k[5:] if k.startswith("fsdp_") else k: value for k, value in config.items()}
    options = v["fsdp"].split() if isinstance(v["fsdp"], str) else v["fsdp"] if isinstance(v["fsdp"], list) else []
    for option in options:
        if _FSDP_OPTIONS.get(option) is not None:
            config.setdefault("reshard_after_forward", _FSDP_OPTIONS[option])
    if all(o in _FSDP_OPTIONS for o in options):
        v["fsdp"] = True  # else left as given: validation names the option
    config["min_num_params"] = config.get("min_num_params", 0)
    if isinstance(config.get("transformer_layer_cls_to_wrap"), str):
        config["transformer_layer_cls_to_wrap"] = [config["transformer_layer_cls_to_wrap"]]
    for key in ("xla", "xla_fsdp_v2", "xla_fsdp_grad_ckpt"):
        config.setdefault(key, False)
    v["fsdp_config"] = config


def _fsdp_problems(v: dict[str, Any]) -> list[str]:
    fsdp, config = v["fsdp"], v["fsdp_config"]
    if fsdp in (None, False, "", []):
        return []
    if fsdp is not True:
        unknown = [o for o in (fsdp.split() if isinstance(fsdp, str) else fsdp if isinstance(fsdp, list) else [fsdp])
                   if o not in _FSDP_OPTIONS]
        return [f"fsdp={fsdp!r}: expected True, or options among {', '.join(_FSDP_OPTIONS)} (trainkit's FSDP is "
                f"FSDP2; {unknown} {'is' if len(unknown) == 1 else 'are'} not supported). Fix: pass fsdp=True and "
                "fsdp_config={'reshard_after_forward': True or False}."]
    if not isinstance(config, dict):
        return [f"fsdp_config={config!r}: expected a dict, a path to a JSON file, or None."]
    out = []
    for key, value in config.items():
        if key in _FSDP_FIXED and str(value).lower() != str(_FSDP_FIXED[key]).lower():
            out.append(f"fsdp_config[{key!r}]={value!r}: trainkit supports only {_FSDP_FIXED[key]!r}. Fix: drop it.")
        elif key not in _FSDP_FIXED and key not in _FSDP_KEYS:
            out.append(f"fsdp_config[{key!r}]: not an FSDP option trainkit implements (it does {', '.join(_FSDP_KEYS)}). "
                       "Fix: drop it.")
    if str(config.get("version", 2)) != "2":
        out.append(f"fsdp_config['version']={config['version']!r}: trainkit implements FSDP2 only. Fix: drop it.")
    if str(config.get("reshard_after_forward", True)).lower() not in ("true", "false"):
        out.append(f"fsdp_config['reshard_after_forward']={config['reshard_after_forward']!r}: expected True or False.")
    layers = config.get("transformer_layer_cls_to_wrap")
    if layers is not None and not _str_list(layers):
        out.append(f"fsdp_config['transformer_layer_cls_to_wrap']={layers!r}: expected class names, e.g. ['BertLayer'].")
    return out


def _normalise(v: dict[str, Any]) -> None:
    """Apply HF 5.24's ``__post_init__`` derivations to ``v`` in place (robust to invalid types)."""
    v["output_dir"] = "trainer_output" if v["output_dir"] is None else v["output_dir"]
    _normalise_fsdp(v)
    if isinstance(v["output_dir"], str):
        v["output_dir"] = os.path.expanduser(v["output_dir"])
    for name in ("lr_scheduler_kwargs", "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"):
        if isinstance(v[name], str) and v[name].startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):  # left a string: validation reports it
                v[name] = _convert_str_dict(json.loads(v[name]))
    for old, new in _ALIASES:
        if v[new] is None and v[old] is not None:
            warnings.warn(f"`{old}` is deprecated and will be removed in v6. Use `{new}` instead.", FutureWarning,
                          stacklevel=4)
            v[new] = v[old]
        v[old] = v[new]
    if v["activation_checkpointing"] is None:
        v["activation_checkpointing"] = v["gradient_checkpointing"] = False
    if v["disable_tqdm"] is None:
        v["disable_tqdm"] = _hf_log_level() > logging.WARNING
    if v["eval_strategy"] != "no":
        v["do_eval"] = True
    if v["eval_strategy"] == "steps" and (v["eval_steps"] is None or v["eval_steps"] == 0) \
            and _real(v["logging_steps"]) and v["logging_steps"] > 0:  # fmt: skip
        v["eval_steps"] = v["logging_steps"]
    metric_driven = v["load_best_model_at_end"] or v["lr_scheduler_type"] in _METRIC_SCHEDULERS
    if v["metric_for_best_model"] is None and metric_driven:
        v["metric_for_best_model"] = "loss"
    if v["greater_is_better"] is None and isinstance(v["metric_for_best_model"], str):
        v["greater_is_better"] = not v["metric_for_best_model"].endswith("loss")
    report = v["report_to"]
    if report in ("all", ["all"]):
        from transformers.integrations import get_available_reporting_integrations

        report = [*get_available_reporting_integrations(), "jsonl"]  # trainkit's own JSON-lines log too
    elif report is None or report in ("none", ["none"], [None]):
        report = []
    v["report_to"] = list(report) if isinstance(report, (list, tuple)) else [report]
    kubeflow = os.getenv("KUBEFLOW_TRAINER_SERVER_URL") is not None  # HF's is_kubeflow_available()
    kubeflow = kubeflow and os.getenv("DISABLE_KUBEFLOW_INTEGRATION", "FALSE").upper() != "TRUE"
    if kubeflow and "kubeflow" not in v["report_to"]:
        v["report_to"].append("kubeflow")
    for kind in ("logging", "eval", "save"):
        steps = v[f"{kind}_steps"]
        if v[f"{kind}_strategy"] == "steps" and _real(steps) and steps > 1 and steps == int(steps):
            v[f"{kind}_steps"] = int(steps)
    if v["torch_compile_mode"] is not None or v["torch_compile_backend"] is not None:
        v["torch_compile"] = True
    if v["torch_compile"] and v["torch_compile_backend"] is None:
        v["torch_compile_backend"] = "inductor"
    if v["use_cpu"]:
        v["dataloader_pin_memory"] = False


# --- validation: every problem, as one line each ---------------------------------------------------


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _optional(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or ok(x)


def _str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(s, str) for s in x)


# Type rules from the annotations (checked after normalisation), then range rules: (field, ok, expected).
_BY_TYPE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (lambda x: isinstance(x, bool), "True or False"),
    "bool | None": (_optional(lambda x: isinstance(x, bool)), "True, False or None"),
    "str | None": (_optional(lambda x: isinstance(x, str)), "a string or None"),
    "dict[str, Any] | str | None": (_optional(lambda x: isinstance(x, dict)), "a dict, a JSON object string or None"),
    "list[str] | None": (_optional(_str_list), "a list of strings or None"),
}
_RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    (f.name, *_BY_TYPE[f.type]) for f in attrs.fields(TrainingArguments) if f.type in _BY_TYPE
] + [
    *[(n, lambda x: _int(x) and x >= 1, "an int >= 1")
      for n in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")],
    ("num_train_epochs", _real, "a finite number"),
    ("max_steps", _int, "an int (<= 0: train for num_train_epochs)"),
    ("learning_rate", lambda x: _real(x) and x > 0, "a finite number > 0"),
    ("warmup_steps", lambda x: _real(x) and x >= 0, "a number >= 0: steps, or a ratio of the total steps below 1"),
    *[(n, lambda x: _real(x) and x >= 0, "a finite number >= 0")
      for n in ("weight_decay", "adam_epsilon", "eval_delay")],
    *[(n, lambda x: _real(x) and 0 <= x < 1, "a number in [0, 1)") for n in ("adam_beta1", "adam_beta2")],
    ("max_grad_norm", _optional(lambda x: isinstance(x, numbers.Real) and not isinstance(x, bool) and x == x),
     "a number (<= 0 or None: no clipping)"),
    ("label_smoothing_factor", lambda x: _real(x) and 0 <= x < 1, "a number in [0, 1) (0: no smoothing)"),
    ("save_total_limit", _optional(lambda x: _int(x) and x >= 0), "None (keep all) or an int >= 0"),
    ("seed", _int, "an int"),
    ("data_seed", _optional(_int), "an int or None (use seed)"),
    ("dataloader_num_workers", lambda x: _int(x) and x >= 0, "an int >= 0 (0: load in the main process)"),
    ("dataloader_prefetch_factor", _optional(lambda x: _int(x) and x >= 1), "None or an int >= 1"),
    ("eval_accumulation_steps", _optional(lambda x: _int(x) and x >= 1), "None or an int >= 1"),
    ("report_to", _str_list, "integration names, 'all' or 'none'"),
    ("ddp_backend", _optional(lambda x: x in _BACKENDS), f"None (nccl on CUDA, gloo on CPU) or one of {', '.join(_BACKENDS)}"),
    ("ddp_timeout", lambda x: _int(x) and x > 0, "an int number of seconds > 0"),
    ("ddp_bucket_cap_mb", _optional(lambda x: _int(x) and x > 0), "None (DDP's default) or an int > 0"),
    ("include_for_metrics", lambda x: _str_list(x) and set(x) <= set(_FOR_METRICS), "a list of 'inputs', 'loss'"),
    ("on_nonfinite", lambda x: x in ("raise", "skip"), "'raise' (NonFiniteError) or 'skip' (the update is skipped)"),
]
_NAMED = (("optim", OPTIMIZER_NAMES), ("lr_scheduler_type", _SCHEDULERS), ("logging_strategy", _INTERVALS),
          ("eval_strategy", _INTERVALS), ("save_strategy", _SAVES))


def _problems(v: dict[str, Any]) -> list[str]:
    out: list[str] = []

    def bad(subject: str, expected: str, fix: str) -> None:
        out.append(f"{subject}: expected {expected}. Fix: {fix}")

    for name, ok, expected in _RULES:
        if not ok(v[name]):
            bad(f"{name}={v[name]!r}", expected, f"pass e.g. {name}={_DEFAULTS[name]!r} (the default).")
    for name, known in _NAMED:
        if not isinstance(v[name], str) or v[name] not in known:
            near = closest_names(str(v[name]), known)
            listed = f"one of {', '.join(map(repr, known))}"
            listed = "a name in trainkit.OPTIMIZER_NAMES" if name == "optim" else listed
            fix = f"did you mean {' or '.join(map(repr, near))}?" if near else f"pass e.g. {name}={_DEFAULTS[name]!r}."
            bad(f"{name}={v[name]!r}", listed, fix)
    if isinstance(v["optim_args"], str):
        try:
            parse_optim_args(v["optim_args"])
        except ConfigError as error:
            out.append(str(error))
    if _real(v["num_train_epochs"]) and _int(v["max_steps"]) and v["num_train_epochs"] <= 0 and v["max_steps"] <= 0:
        bad(f"num_train_epochs={v['num_train_epochs']!r} with max_steps={v['max_steps']!r}",
            "num_train_epochs > 0 or max_steps > 0 (this trains for no step)",
            "pass num_train_epochs > 0, or max_steps=<optimizer steps>.")
    if v["fp16"] is True and v["bf16"] is True:
        bad("fp16=True with bf16=True", "at most one mixed precision", "keep one of them.")
    elif v["fp16"] is True and (v["use_cpu"] is True or not torch.cuda.is_available()):
        where = "use_cpu=True" if v["use_cpu"] is True else "this machine has no CUDA device"
        bad(f"fp16=True ({where})", "a CUDA device: fp16 mixed precision needs a GPU, as in transformers",
            "pass bf16=True (bfloat16 autocast runs on the CPU too), or train on a GPU.")
    elif v["bf16"] is True and v["use_cpu"] is not True and torch.cuda.is_available() and not _cuda_bf16():
        bad("bf16=True", f"a device with bfloat16 support; {torch.cuda.get_device_name()} has none (compute capability < 8.0)",
            "pass fp16=True on this GPU, or use_cpu=True.")
    foreign = _foreign_keywords(v["lr_scheduler_type"], v["lr_scheduler_kwargs"]) \
        if isinstance(v["lr_scheduler_kwargs"], dict) and v["lr_scheduler_type"] in SCHEDULE_NAMES else None
    if foreign is not None:
        unknown, takes, fix = foreign
        bad(f"lr_scheduler_kwargs={v['lr_scheduler_kwargs']!r} with lr_scheduler_type={v['lr_scheduler_type']!r}",
            f"only the keywords {v['lr_scheduler_type']!r} takes: {takes}", fix)
    for kind in ("logging", "eval", "save"):
        name, steps = f"{kind}_steps", v[f"{kind}_steps"]
        if v[f"{kind}_strategy"] != "steps":
            continue
        subject = f"{name}={steps!r} with {kind}_strategy='steps'"
        if not (_real(steps) and steps > 0):
            also = " (eval_steps=None uses logging_steps, which is not > 0 either)" if kind == "eval" else ""
            bad(subject, "a number > 0: an int number of steps, or a ratio of the total steps below 1" + also,
                f"pass e.g. {name}=500, or {kind}_strategy='epoch'.")
        elif steps > 1 and steps != int(steps):
            bad(subject, "an int when above 1 (values below 1 are ratios of the total steps)",
                f"pass {name}={int(steps)}.")
    es, ss, ev, sv = v["eval_strategy"], v["save_strategy"], v["eval_steps"], v["save_steps"]
    if v["load_best_model_at_end"] is True and ss != "best":
        if es != ss:
            fix = f"pass save_strategy={es!r}." if es != "no" else "set both to 'steps' or both to 'epoch'."
            bad(f"load_best_model_at_end=True with eval_strategy={es!r} and save_strategy={ss!r}",
                "the strategies to match (or save_strategy='best'): the best model is an evaluated, saved checkpoint",
                fix)
        elif es == "steps" and _real(ev) and _real(sv) and ev > 0 and sv > 0 and not _multiple(sv, ev):
            bad(f"save_steps={sv!r} with eval_steps={ev!r} and load_best_model_at_end=True", "save_steps a multiple "
                "of eval_steps (both step counts, or both ratios below 1)", f"pass e.g. save_steps={ev!r}.")
    if ss == "best" and es == "no":
        bad("save_strategy='best' with eval_strategy='no'", "an eval strategy: 'best' saves when an evaluation finds "
            "a new best metric, so nothing would ever be saved", "pass eval_strategy='steps' or 'epoch'.")
    if v["lr_scheduler_type"] in _METRIC_SCHEDULERS and es == "no":
        bad(f"lr_scheduler_type={v['lr_scheduler_type']!r} with eval_strategy='no'",
            "an eval strategy: this scheduler steps on evaluation metrics",
            "pass eval_strategy='steps' or 'epoch', or another lr_scheduler_type.")
    out.extend(_fsdp_problems(v))
    if v["dataloader_num_workers"] == 0 and v["dataloader_prefetch_factor"] is not None:
        bad(f"dataloader_prefetch_factor={v['dataloader_prefetch_factor']!r} with dataloader_num_workers=0",
            "no prefetch factor: only worker processes prefetch", "pass dataloader_num_workers > 0, or drop it.")
    return out


def _cuda_bf16() -> bool:
    """Whether the current CUDA device computes in bfloat16 (its own check; patched in tests)."""
    return torch.cuda.is_bf16_supported()


def _multiple(save: float, every: float) -> bool:
    """HF's test that ``save_steps`` is a multiple of ``eval_steps`` (ratios: to 6 decimals)."""
    if save % every == 0:
        return True
    return every < 1 and save < 1 and (save * 1_000_000) % (every * 1_000_000) == 0


# --- transformers' side: conversion and defaults ----------------------------------------------------


@functools.cache
def _hf_defaults() -> dict[str, Any]:
    """Field values of a default ``transformers.TrainingArguments`` after its ``__post_init__``, built once."""
    import transformers

    try:
        hf = transformers.TrainingArguments()
    except ImportError:  # accelerate missing: HF cannot build one, so fall back to the declared defaults
        return {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
                for f in dataclasses.fields(transformers.TrainingArguments)}
    return {f.name: getattr(hf, f.name) for f in dataclasses.fields(hf)}


_REFERENCES: dict[tuple[type, str], dict[str, Any]] = {}


def _hf_reference(cls: type, supported: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``cls(**supported)``: every other option at the value HF derives for it (cached).

    Falls back to HF's plain defaults when HF refuses ``supported`` (arguments edited after
    construction, or built on a machine with other devices).
    """
    key = (cls, repr(sorted(supported.items())))
    if key not in _REFERENCES:
        if len(_REFERENCES) >= 64:
            _REFERENCES.clear()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hf = cls(**copy.deepcopy(supported))
            _REFERENCES[key] = {f.name: getattr(hf, f.name) for f in dataclasses.fields(hf)}
        except ValueError:
            declared = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
            _REFERENCES[key] = {**declared, **_hf_defaults()}
    return _REFERENCES[key]


def _show(value: Any) -> str:
    text = repr(_plain(value))
    return text if len(text) <= 100 else text[:97] + "..."


def from_hf(hf_args: transformers.TrainingArguments) -> TrainingArguments:
    """Convert a ``transformers.TrainingArguments`` (or a subclass such as ``Seq2SeqTrainingArguments``).

    Supported fields are copied (enums as their values) and validated by :class:`TrainingArguments`.
    Every other field must hold the value HF gives it when only the supported options are passed;
    otherwise it was set, and trainkit would ignore it.

    Args:
        hf_args: the HF arguments, after their ``__post_init__``.

    Returns:
        The equivalent trainkit arguments.

    Raises:
        UnsupportedOptionError: options trainkit does not support are set (all listed, followed by
            any invalid supported value).
        ConfigError: ``hf_args`` is not HF's class, or supported values are invalid for trainkit
            (e.g. an ``optim`` trainkit does not implement).

    Example:
        >>> import transformers
        >>> from_hf(transformers.TrainingArguments(output_dir="out", learning_rate=1e-3)).learning_rate
        0.001
        >>> from_hf(transformers.TrainingArguments(output_dir="out", hub_model_id="me/m", full_determinism=True))
        Traceback (most recent call last):
        trainkit.errors.UnsupportedOptionError: transformers options trainkit does not support are set:
          - hub_model_id='me/m' (default None): trainkit does not support it. Fix: leave hub_model_id at its default.
          - full_determinism=True (default False): trainkit does not support it: its steps are seeded per step, reproducible on CPU. Fix: leave full_determinism at its default.
    """
    import transformers

    if not isinstance(hf_args, transformers.TrainingArguments):
        raise ConfigError(f"hf_args={_show(hf_args)}: expected a transformers.TrainingArguments. Fix: pass one, or "
                          "build trainkit.args.TrainingArguments directly.")
    names = [f.name for f in dataclasses.fields(hf_args) if f.init]
    supported = {n: _plain(getattr(hf_args, n)) for n in names if n in _FIELD_NAMES}
    try:
        converted, invalid = TrainingArguments(**supported), None
    except ConfigError as error:
        converted, invalid = None, error
    reference = _hf_reference(type(hf_args), supported)
    lines = [
        f"{n}={_show(getattr(hf_args, n))} (default {_show(reference.get(n))}): "
        f"{_WHY_UNSUPPORTED.get(n, 'trainkit does not support it')}. Fix: leave {n} at its default."
        for n in names if n not in _FIELD_NAMES and getattr(hf_args, n) != reference.get(n)
    ]
    if lines:
        also = f"\nAlso, {invalid}" if invalid is not None else ""
        head = "transformers options trainkit does not support are set:"
        raise UnsupportedOptionError("\n  - ".join([head, *lines]) + also)
    if invalid is not None:
        raise invalid
    return converted  # type: ignore[return-value]


def as_training_arguments(args: Any) -> TrainingArguments:
    """``Trainer(args=...)``: trainkit's arguments as given, transformers' converted (:func:`from_hf`), None
    the defaults with ``output_dir="tmp_trainer"`` (transformers.Trainer's choice for ``args=None``).

    Args:
        args: a :class:`TrainingArguments`, a ``transformers.TrainingArguments`` (or a subclass), or None.

    Returns:
        trainkit's arguments: ``args`` itself, :func:`from_hf` of it, or the defaults.

    Raises:
        ConfigError: ``args`` is another type (the message names it).
        UnsupportedOptionError: as :func:`from_hf`, for transformers' arguments.

    Example:
        >>> args = TrainingArguments(output_dir="out")
        >>> as_training_arguments(args) is args
        True
        >>> as_training_arguments(None).output_dir
        'tmp_trainer'
        >>> as_training_arguments({"output_dir": "out"})
        Traceback (most recent call last):
        trainkit.errors.ConfigTypeError: Trainer(args=...): expected trainkit.TrainingArguments or transformers.TrainingArguments, got dict. Fix: pass TrainingArguments(**args).
    """
    if args is None:
        return TrainingArguments(output_dir="tmp_trainer")  # transformers.Trainer's choice for args=None
    if isinstance(args, TrainingArguments):
        return args
    import transformers

    if isinstance(args, transformers.TrainingArguments):
        return from_hf(args)
    fix = "TrainingArguments(**args)" if isinstance(args, Mapping) else "TrainingArguments(output_dir=..., ...)"
    raise ConfigTypeError(
        f"Trainer(args=...): expected trainkit.TrainingArguments or transformers.TrainingArguments, got {type(args).__name__}. "
        f"Fix: pass {fix}."
    )
