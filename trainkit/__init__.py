"""trainkit: a functional, composable training toolkit for PyTorch and transformers.

The public API, re-exported; nothing else lives here. ``import trainkit`` never imports
``transformers`` or ``datasets``: the features that need them import them when used.
"""

from trainkit.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    StaleStateError,
    TrainkitError,
    UnsupportedOptionError,
)
from trainkit.optim import OPTIMIZER_NAMES, decay_parameter_names, make_optimizer, needs_create_graph, param_groups
from trainkit.schedules import SCHEDULE_NAMES, Schedule, make_schedule, make_scheduler
from trainkit.seeding import derive_seed
from trainkit.state import Progress, TrainState, fork, init_state
from trainkit.step import EvalOutput, StepHooks, StepOutput, eval_step, train_step

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EvalOutput",
    "NonFiniteError",
    "OPTIMIZER_NAMES",
    "SCHEDULE_NAMES",
    "Schedule",
    "Progress",
    "StaleStateError",
    "StepHooks",
    "StepOutput",
    "TrainState",
    "TrainkitError",
    "UnsupportedOptionError",
    "decay_parameter_names",
    "derive_seed",
    "eval_step",
    "fork",
    "init_state",
    "make_optimizer",
    "make_schedule",
    "make_scheduler",
    "needs_create_graph",
    "param_groups",
    "train_step",
]
