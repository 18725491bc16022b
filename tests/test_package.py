"""Package-level contracts: light imports, the public API, error classes."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import trainkit
from trainkit import errors


def test_import_trainkit_does_not_import_transformers_or_datasets():
    """A fresh interpreter importing trainkit must not pull in transformers or datasets."""
    code = (
        "import sys, trainkit; "
        "heavy = [m for m in ('transformers', 'datasets', 'torch_optimizer') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_all_lists_exactly_the_public_api():
    assert sorted(trainkit.__all__) == sorted(set(trainkit.__all__))
    for name in trainkit.__all__:
        obj = getattr(trainkit, name)
        assert not name.startswith("_")
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, f"{name} has no docstring"


# The one positional argument with a default: the optimizer's name is what make_optimizer is
# about (make_optimizer(model, "lamb", lr=...)), and "adamw_torch" mirrors transformers' default.
POSITIONAL_WITH_DEFAULT = {("make_optimizer", "name")}


@pytest.mark.parametrize("name", [n for n in trainkit.__all__ if inspect.isfunction(getattr(trainkit, n))])
def test_public_functions_have_type_hints_and_keyword_only_options(name):
    """Every public function is fully annotated, and options after the data arguments are keyword-only."""
    fn = getattr(trainkit, name)
    sig = inspect.signature(fn)
    assert sig.return_annotation is not inspect.Signature.empty, name
    for p in sig.parameters.values():
        if p.kind is not p.VAR_POSITIONAL and p.kind is not p.VAR_KEYWORD:
            assert p.annotation is not inspect.Parameter.empty, f"{name}({p.name}) is not annotated"
        if p.default is not inspect.Parameter.empty and (name, p.name) not in POSITIONAL_WITH_DEFAULT:
            assert p.kind is p.KEYWORD_ONLY, f"{name}: option {p.name!r} should be keyword-only"


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.UnsupportedOptionError, ValueError),
        (errors.StaleStateError, RuntimeError),
        (errors.NonFiniteError, FloatingPointError),
        (errors.CheckpointError, OSError),
    ],
)
def test_errors_refine_builtins(cls, builtin):
    assert issubclass(cls, errors.TrainkitError) and issubclass(cls, builtin)
