"""Checkpoints: exact resume, manifest verification, safe loading, formats, crash consistency.

Everything runs on real files under pytest's tmp_path, with the tiny models of tests/strategies.py.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch import nn

import trainkit._files
import trainkit.checkpoint as ckpt
from tests.strategies import VOCAB, DictMLP, mlp, mlp_batch, seeds, tiny_bert, tiny_gpt2
from trainkit import CheckpointError, ConfigError, init_state, make_optimizer, make_schedule, train_step
from trainkit.checkpoint import (
    CheckpointWarning,
    TrainkitWarning,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint_metadata,
    read_trainer_state,
    remove_staging,
    save_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)

ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


# ---- runs ---------------------------------------------------------------------------------------


def _bert_batch(seed: int, rows: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (rows, 6), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 3, (rows,), generator=gen)}


KINDS = {
    "mlp": (lambda seed: mlp(seed=seed, dropout=0.2), mlp_batch),
    "bert": (lambda seed: tiny_bert(seed=seed, dropout=0.2), _bert_batch),
}


def _window(kind: str, data_seed: int, step: int, k: int) -> list[dict]:
    return [KINDS[kind][1](data_seed + 100 * step + i, 2 + i) for i in range(k)]


def _fresh(kind: str, seed: int = 0):
    """A model, AdamW (HF decay groups) and a warmup-linear schedule, as a run builds them."""
    model = KINDS[kind][0](seed)
    optimizer = make_optimizer(model, "adamw_torch", lr=1e-2, weight_decay=0.01)
    return model, optimizer, make_schedule("linear", num_warmup_steps=2, num_training_steps=12)


def _train(state, kind, data_seed, steps, k, losses):
    for step in steps:
        state, out = train_step(state, _window(kind, data_seed, step, k), max_grad_norm=1.0)
        losses.append(out.loss)
    return state


def _assert_same(a, b):
    """Bitwise equality of nested state dicts (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


@settings(max_examples=12)
@given(kind=st.sampled_from(sorted(KINDS)), n=st.integers(1, 5), m=st.integers(1, 3), k=st.integers(1, 3), data_seed=seeds)
def test_resume_equals_uninterrupted_run(kind, n, m, k, data_seed):
    """Property: with dropout on and k micro-batches, training n steps, save_checkpoint,
    load_checkpoint into a fresh (differently initialised) model and optimizer, then m more
    steps gives parameters, optimizer state and losses bitwise equal to n + m uninterrupted
    steps from the same seeded init (MLP and tiny BERT, AdamW, a warmup-linear schedule)."""
    event(f"{kind}, k={k}")
    model, optimizer, schedule = _fresh(kind)
    whole_losses: list = []
    whole = _train(init_state(model, optimizer, schedule=schedule, seed=7), kind, data_seed, range(n + m), k, whole_losses)

    model, optimizer, schedule = _fresh(kind)
    resumed_losses: list = []
    first = _train(init_state(model, optimizer, schedule=schedule, seed=7), kind, data_seed, range(n), k, resumed_losses)
    with tempfile.TemporaryDirectory() as out:
        path = save_checkpoint(first, out)
        assert path.name == f"checkpoint-{n}"
        model, optimizer, schedule = _fresh(kind, seed=1)  # other weights: they must come from the file
        state = load_checkpoint(path, model, optimizer, schedule=schedule)
    assert state.progress == first.progress and state.seed == 7 and state.base_lrs == first.base_lrs
    resumed = _train(state, kind, data_seed, range(n, n + m), k, resumed_losses)

    assert resumed.progress == whole.progress
    _assert_same(resumed_losses, whole_losses)
    _assert_same(resumed.model.state_dict(), whole.model.state_dict())
    _assert_same(resumed.optimizer.state_dict(), whole.optimizer.state_dict())


def _fp16_state(seed: int = 0, steps: int = 3):
    """A float32 MLP under fp16 (grad scaler) with an opaque StepLR: every optional file."""
    model = mlp(seed=seed, dropout=0.2, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    state = init_state(model, optimizer, schedule=torch.optim.lr_scheduler.StepLR(optimizer, 2, gamma=0.5), seed=3, precision="fp16")
    for step in range(steps):
        state, _ = train_step(state, mlp_batch(step, 4, dtype=torch.float32))
    return state


def _fresh_fp16():
    model = mlp(seed=5, dropout=0.2, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 2, gamma=0.5)


def _load_fp16(path):
    model, optimizer, scheduler = _fresh_fp16()
    return load_checkpoint(path, model, optimizer, schedule=scheduler)


def test_resume_restores_grad_scaler_and_opaque_scheduler(tmp_path):
    """fp16 grad scaler and an opaque LR scheduler (scaler.pt, scheduler.pt) resume exactly too."""
    whole = _fp16_state(steps=5)
    saved = _fp16_state(steps=3)
    path = save_checkpoint(saved, tmp_path)
    assert {"scaler.pt", "scheduler.pt"} <= {p.name for p in path.iterdir()}
    state = _load_fp16(path)
    assert state.scaler.get_scale() == saved.scaler.get_scale()
    assert state.lr_scheduler.state_dict() == saved.lr_scheduler.state_dict()
    for step in range(3, 5):
        state, _ = train_step(state, mlp_batch(step, 4, dtype=torch.float32))
    _assert_same(state.model.state_dict(), whole.model.state_dict())
    _assert_same(state.optimizer.state_dict(), whole.optimizer.state_dict())
    assert state.lr_scheduler.state_dict() == whole.lr_scheduler.state_dict()


def test_schedule_kind_mismatch_and_metadata(tmp_path):
    """An opaque scheduler was saved but none is passed: CheckpointError; `extra` round-trips as
    JSON and a non-JSON `extra` is refused before anything is written."""
    state = _fp16_state()
    path = save_checkpoint(state, tmp_path, extra={"note": "hi", "epoch_seed": 3})
    model, optimizer, _ = _fresh_fp16()
    with pytest.raises(CheckpointError, match="scheduler"):
        load_checkpoint(path, model, optimizer)
    meta = read_checkpoint_metadata(path)
    assert meta["extra"] == {"note": "hi", "epoch_seed": 3} and meta["progress"]["step"] == 3 and meta["version"] == 1
    with pytest.raises(ConfigError, match="JSON"):
        save_checkpoint(state, tmp_path / "other", extra={"bad": object()})
    assert not (tmp_path / "other").exists()


# ---- manifest -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """checkpoint-1 and checkpoint-2 holding every kind of file (weights, .pt, JSON, manifest)."""
    from transformers import TrainerState

    root = tmp_path_factory.mktemp("pristine")
    save_checkpoint(_fp16_state(steps=1), root, trainer_state=TrainerState(global_step=1), args_json='{"lr": 0.01}')
    path = save_checkpoint(_fp16_state(steps=2), root, trainer_state=TrainerState(global_step=2), args_json='{"lr": 0.01}')
    return root, sorted(p.name for p in path.iterdir())


def _corrupt(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "truncate":
        file.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        i = len(data) // 2
        file.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    else:
        file.unlink()


def test_checkpoint_holds_every_file_with_a_manifest(pristine):
    root, names = pristine
    assert names == ["manifest.json", "model.safetensors", "optimizer.pt", "scaler.pt", "scheduler.pt",
                     "trainer_state.json", "training_args.json", "trainkit_state.json"]
    manifest = json.loads((root / "checkpoint-2" / "manifest.json").read_text())
    assert sorted(e["path"] for e in manifest["files"]) == [n for n in names if n != "manifest.json"]
    assert read_trainer_state(root / "checkpoint-2")["global_step"] == 2
    assert json.loads((root / "checkpoint-2" / "training_args.json").read_text()) == {"lr": 0.01}
    verify_checkpoint(root / "checkpoint-2")
    assert latest_checkpoint(root) == root / "checkpoint-2"


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
def test_corrupt_file_is_named_and_skipped(pristine, tmp_path, how):
    """Each file in turn truncated, altered or deleted: verify_checkpoint names it;
    latest_checkpoint warns (naming the checkpoint and the file) and returns the previous one."""
    source, names = pristine
    for name in names:
        root = tmp_path / f"{how}-{name}"
        shutil.copytree(source, root)
        _corrupt(root / "checkpoint-2" / name, how)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            verify_checkpoint(root / "checkpoint-2")
        with pytest.warns(CheckpointWarning, match=rf"checkpoint-2.*{name.replace('.', '[.]')}"):
            assert latest_checkpoint(root) == root / "checkpoint-1"


def test_extra_files_are_allowed_and_staging_is_never_picked(pristine, tmp_path):
    """Unlisted files do not fail verification; a (newer) staging folder is never returned,
    and remove_staging deletes it and nothing else."""
    root = tmp_path / "run"
    shutil.copytree(pristine[0], root)
    (root / "checkpoint-2" / "README.md").write_text("notes")
    verify_checkpoint(root / "checkpoint-2")
    staging = root / ".staging-checkpoint-9-123-abc"
    shutil.copytree(root / "checkpoint-2", staging)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(root) == root / "checkpoint-2"
    assert remove_staging(root) == [staging]
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert latest_checkpoint(tmp_path / "missing") is None and remove_staging(tmp_path / "missing") == []
    assert issubclass(CheckpointWarning, TrainkitWarning) and issubclass(CheckpointWarning, UserWarning)


def test_no_valid_checkpoint_gives_none(pristine, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(pristine[0], root)
    for path in list_checkpoints(root):
        (path / "manifest.json").unlink()
    with pytest.warns(CheckpointWarning):
        assert latest_checkpoint(root) is None


def test_write_checkpoint_for_the_trainer_is_atomic_and_verified(tmp_path):
    """The Trainer's write_checkpoint uses the same protocol: manifest, verification, overwrite."""
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = write_checkpoint(tmp_path, 4, model=model, optimizer=optimizer, args_json="{}")
    verify_checkpoint(path)
    with torch.no_grad():
        model.net[0].weight.add_(1.0)
    again = write_checkpoint(tmp_path, 4, model=model, optimizer=None)
    verify_checkpoint(again)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    assert sorted(p.name for p in again.iterdir()) == ["manifest.json", "model.safetensors"]


# ---- safe loading -------------------------------------------------------------------------------


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(folder: Path, name: str, marker: Path) -> None:
    """An attacker who controls the folder: replace a .pt file, then re-write the manifest."""
    torch.save({"state": {}, "param_groups": [], "payload": _Payload(marker)}, folder / name)
    (folder / "manifest.json").unlink()
    ckpt._write_manifest(folder)
    verify_checkpoint(folder)


@pytest.fixture
def attacked(tmp_path):
    path = save_checkpoint(_fp16_state(), tmp_path / "run")
    return path, tmp_path / "marker"


@pytest.mark.parametrize("env", [None, "1"])
@pytest.mark.parametrize("name", ["optimizer.pt", "scaler.pt", "scheduler.pt"])
def test_planted_pickle_payload_never_runs(attacked, monkeypatch, env, name):
    """A __reduce__ payload in any .pt file, with a manifest that verifies, is refused with
    CheckpointError naming the file, with and without TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1."""
    path, marker = attacked
    if env:
        monkeypatch.setenv(ENV, env)
    _plant(path, name, marker)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        _load_fp16(path)
    assert not marker.exists()


def test_torch_honours_explicit_weights_only_over_the_env_var(tmp_path, monkeypatch):
    """Pins the answer for this torch: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is read at call time and
    turns an *implicit* torch.load unsafe, but cannot override an explicit weights_only=True."""
    marker, file = tmp_path / "marker", tmp_path / "payload.pt"
    torch.save(_Payload(marker), file)
    monkeypatch.setenv(ENV, "1")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(file, weights_only=True)
    assert not marker.exists()
    with pytest.warns(UserWarning, match=ENV):
        torch.load(file)  # what trainkit never does: the env var wins and the payload runs
    assert marker.exists()


def test_each_safety_layer_alone_refuses_the_payload(attacked, monkeypatch):
    """Layer 2 alone (the pickle scan disabled): torch.load(weights_only=True) refuses it.
    Layer 1 alone (a torch whose env var overrides weights_only=True, simulated): the scan refuses it."""
    path, marker = attacked
    monkeypatch.setenv(ENV, "1")
    _plant(path, "optimizer.pt", marker)
    with monkeypatch.context() as patch:
        patch.setattr(trainkit._files, "_scan_pickles", lambda _path: None)
        with pytest.raises(CheckpointError, match="weights_only"):
            _load_fp16(path)
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, **kw: real_load(f, map_location=kw.get("map_location"), weights_only=False))
    with pytest.raises(CheckpointError, match=r"optimizer\.pt.*builtins\.open|optimizer\.pt.*io\.open"):
        _load_fp16(path)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["truncate", "header"])
def test_malformed_safetensors_is_named(tmp_path, how):
    """A truncated file or a header that is not JSON: CheckpointError naming model.safetensors,
    by the manifest (verify=True) and by the reader itself (verify=False); the model is untouched."""
    path = save_checkpoint(_fp16_state(), tmp_path)
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if how == "truncate" else data[:8] + b"!" + data[9:])
    for verify in (True, False):
        model, optimizer, schedule = _fresh_fp16()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(CheckpointError, match=r"model\.safetensors"):
            load_checkpoint(path, model, optimizer, schedule=schedule, verify=verify)
        _assert_same(model.state_dict(), before)


def test_checkpoint_of_another_model_names_the_parameter(tmp_path):
    """Loading into a model of other shapes: CheckpointError naming the first mismatched
    parameter and both shapes; the model and optimizer are left untouched."""
    model, optimizer, schedule = _fresh("mlp")
    path = save_checkpoint(init_state(model, optimizer, schedule=schedule), tmp_path)
    other = DictMLP(d_hidden=8).double()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"'net\.0\.weight'.*\(16, 8\).*\(8, 8\)"):
        load_checkpoint(path, other, make_optimizer(other, "adamw_torch", lr=1e-2))
    _assert_same(other.state_dict(), before)


# ---- formats ------------------------------------------------------------------------------------


def test_pretrained_checkpoint_opens_with_from_pretrained(tmp_path):
    """A PreTrainedModel checkpoint (and its tokenizer) opens with from_pretrained; GPT-2's tied
    embedding round-trips through load_checkpoint with the tie intact."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"])})
    model, optimizer, schedule = _fresh("bert")
    state = _train(init_state(model, optimizer, schedule=schedule), "bert", 0, range(2), 1, [])
    path = save_checkpoint(state, tmp_path, processing_class=tokenizer)
    verify_checkpoint(path)
    opened = AutoModelForSequenceClassification.from_pretrained(path)
    _assert_same(opened.state_dict(), state.model.state_dict())
    assert AutoTokenizer.from_pretrained(path)("good bad")["input_ids"] == [2, 5, 6, 3]

    gpt = tiny_gpt2(seed=1)
    path = save_checkpoint(init_state(gpt, torch.optim.AdamW(gpt.parameters())), tmp_path / "gpt")
    fresh = tiny_gpt2(seed=2)
    load_checkpoint(path, fresh, torch.optim.AdamW(fresh.parameters()))
    assert fresh.lm_head.weight is fresh.transformer.wte.weight
    _assert_same(fresh.state_dict(), gpt.state_dict())
    _assert_same(AutoModelForCausalLM.from_pretrained(path).state_dict(), gpt.state_dict())


class TiedLM(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.embed(ids))


def test_plain_module_with_tied_weights_round_trips(tmp_path):
    from safetensors import safe_open

    model = TiedLM(seed=0)
    path = save_checkpoint(init_state(model, torch.optim.SGD(model.parameters(), lr=0.1)), tmp_path)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert len(list(f.keys())) == 1  # stored once
    fresh = TiedLM(seed=1)
    load_checkpoint(path, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1))
    assert fresh.head.weight is fresh.embed.weight
    _assert_same(fresh.state_dict(), model.state_dict())


# ---- crash consistency --------------------------------------------------------------------------


def test_failed_save_leaves_no_checkpoint_and_keeps_the_old_one(tmp_path, monkeypatch):
    """An error during a save (here os.replace) leaves no checkpoint-N and no staging folder;
    when checkpoint-N existed, the committed one is put back intact."""
    state = _fp16_state()

    def fail(*_args):
        raise OSError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(ckpt.os, "replace", fail)
        with pytest.raises(OSError, match="disk on fire"):
            save_checkpoint(state, tmp_path)
    assert list(tmp_path.iterdir()) == []

    old = save_checkpoint(state, tmp_path)
    old_manifest = (old / "manifest.json").read_bytes()
    real, calls = os.replace, []

    def fail_second(src, dst):
        calls.append(src)
        if len(calls) == 2:  # after moving the old checkpoint aside
            raise OSError("disk on fire")
        real(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(ckpt.os, "replace", fail_second)
        with pytest.raises(OSError):
            save_checkpoint(state, tmp_path, extra={"second": True})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-3"]
    assert (old / "manifest.json").read_bytes() == old_manifest
    verify_checkpoint(old)


def _killed_save(root: Path, state, kill_at: int, extra: dict) -> int:
    """Save in a forked child that dies (os._exit, no cleanup) at the kill_at-th fsync or
    os.replace; returns how many such calls the child reached."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            count = 0
            real_fsync, real_replace = os.fsync, os.replace

            def point(real):
                def call(*args):
                    nonlocal count
                    count += 1
                    if count == kill_at:
                        os._exit(100)
                    return real(*args)

                return call

            os.fsync, os.replace = point(real_fsync), point(real_replace)
            save_checkpoint(state, root, extra=extra)
            code = min(count, 99)
        except BaseException:
            code = 101
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_kill_at_any_point_leaves_only_complete_checkpoints(tmp_path):
    """A kill (no cleanup runs) at every fsync and rename of a save, first save and overwrite:
    each checkpoint-N present verifies, the newest valid one is the new or the previous
    checkpoint, and remove_staging leaves nothing behind."""
    state = _fp16_state()
    total = _killed_save(tmp_path / "count", state, kill_at=0, extra={})
    assert 5 < total < 99
    outcomes = set()
    for overwrite in (False, True):
        for kill_at in range(1, total + 2):
            root = tmp_path / f"{overwrite}-{kill_at}"
            prev = save_checkpoint(_fp16_state(steps=1), root)
            if overwrite:
                save_checkpoint(state, root, extra={"v": "old"})
            code = _killed_save(root, state, kill_at, extra={"v": "new"})
            assert code in (100, total) or (overwrite and code == total + 1)
            for path in list_checkpoints(root):
                verify_checkpoint(path)
            latest = latest_checkpoint(root)
            assert latest in (prev, root / "checkpoint-3")
            if code != 100:
                assert read_checkpoint_metadata(latest)["extra"] == {"v": "new"}
            outcomes.add((code == 100, bool(remove_staging(root))))
            assert not [p for p in root.iterdir() if p.name.startswith(".")]
    assert outcomes >= {(True, True), (False, False)}  # killed mid-save (staging left), and completed


def test_deleting_a_missing_checkpoint_leaves_nothing_behind(tmp_path):
    """delete_checkpoint on a path that is not a folder raises FileNotFoundError naming it, and creates no staging folder."""
    with pytest.raises(FileNotFoundError, match="checkpoint-7"):
        ckpt.delete_checkpoint(tmp_path / "checkpoint-7")
    assert list(tmp_path.iterdir()) == []
