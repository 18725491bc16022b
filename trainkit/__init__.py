"""trainkit: a functional, composable training toolkit for PyTorch and transformers.

The public API, re-exported; nothing else lives here. ``import trainkit`` never imports
``transformers`` or ``datasets``: the features that need them import them when used.
"""

from typing import Any

from trainkit.args import TrainingArguments, from_hf
from trainkit.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_staging,
    save_checkpoint,
    save_model,
    verify_checkpoint,
)
from trainkit.checks import dry_run
from trainkit.distributed import (
    ProcessInfo,
    all_reduce_metrics,
    barrier,
    broadcast_object,
    is_main_process,
    setup_distributed,
    teardown_distributed,
    wrap_model,
)
from trainkit.errors import (
    CheckpointError,
    CheckpointWarning,
    ConfigError,
    ConfigTypeError,
    MetricNotFoundError,
    MissingDependencyError,
    NonFiniteError,
    StaleStateError,
    TrainkitError,
    TrainkitWarning,
    UnsupportedOptionError,
)
from trainkit.evaluation import EvalResult, evaluate, predict
from trainkit.optim import OPTIMIZER_NAMES, decay_parameter_names, make_optimizer, needs_create_graph, param_groups
from trainkit.schedules import SCHEDULE_NAMES, Schedule, make_schedule, make_scheduler
from trainkit.plots import plot_log_history, plot_schedule
from trainkit.seeding import derive_seed
from trainkit.sharding import shard_model
from trainkit.state import Progress, TrainState, fork, init_state
from trainkit.step import EvalOutput, StepHooks, StepOutput, eval_step, train_step

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The Trainer needs transformers; importing it lazily keeps `import trainkit` light.
    if name == "Trainer":
        from trainkit.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'trainkit' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "MetricNotFoundError",
    "MissingDependencyError",
    "ConfigError",
    "ConfigTypeError",
    "EvalOutput",
    "EvalResult",
    "NonFiniteError",
    "OPTIMIZER_NAMES",
    "ProcessInfo",
    "SCHEDULE_NAMES",
    "Schedule",
    "Progress",
    "StaleStateError",
    "StepHooks",
    "StepOutput",
    "TrainState",
    "Trainer",
    "TrainingArguments",
    "TrainkitError",
    "TrainkitWarning",
    "UnsupportedOptionError",
    "all_reduce_metrics",
    "barrier",
    "broadcast_object",
    "decay_parameter_names",
    "derive_seed",
    "dry_run",
    "eval_step",
    "evaluate",
    "fork",
    "from_hf",
    "init_state",
    "is_main_process",
    "latest_checkpoint",
    "load_checkpoint",
    "make_optimizer",
    "make_schedule",
    "make_scheduler",
    "needs_create_graph",
    "param_groups",
    "plot_log_history",
    "plot_schedule",
    "predict",
    "remove_staging",
    "save_checkpoint",
    "save_model",
    "setup_distributed",
    "shard_model",
    "teardown_distributed",
    "train_step",
    "verify_checkpoint",
    "wrap_model",
]
