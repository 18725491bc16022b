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
from trainkit.seeding import derive_seed
from trainkit.state import Progress, TrainState, fork, init_state
from trainkit.step import EvalOutput, StepOutput, eval_step, train_step

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EvalOutput",
    "NonFiniteError",
    "Progress",
    "StaleStateError",
    "StepOutput",
    "TrainState",
    "TrainkitError",
    "UnsupportedOptionError",
    "derive_seed",
    "eval_step",
    "fork",
    "init_state",
    "train_step",
]
