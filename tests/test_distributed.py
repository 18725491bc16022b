"""Multi-process training on torch.distributed: real ``torchrun`` processes (gloo, CPU, 2 ranks).

The 2-process runs (tests/ddp_worker.py) are compared with the same code run here in one
process with twice the per-process batch: DDP must be invisible in the results. The sharding
rules are property-tested against accelerate's own samplers, which transformers.Trainer uses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from hypothesis import given
from hypothesis import strategies as st

from tests import ddp_worker
from trainkit.data import iterable_batches, num_batches, shard_batches
from trainkit.distributed import (
    ProcessInfo,
    all_reduce_metrics,
    broadcast_object,
    is_main_process,
    launch_env,
    setup_distributed,
    wrap_model,
)
from trainkit.errors import ConfigError, UnsupportedOptionError

ROOT = Path(__file__).resolve().parents[1]
ENV = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
       "MASTER_PORT": "29500"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, out: Path, timeout: int = 240, nproc: int = 2, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={_port()}",
               str(ROOT / "tests" / "ddp_worker.py"), *args, str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def _load(out: Path, name: str) -> tuple[dict, dict]:
    return json.loads((out / f"{name}.json").read_text()), torch.load(out / f"{name}.pt", weights_only=True)


def _assert_params_close(got: dict, want: dict, atol: float) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], atol=atol, rtol=0), f"{name}: {(got[name] - want[name]).abs().max()}"


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """One torchrun launch of the 'train' scenario: Trainer (GA 1 and 2), functional loop, uninterrupted run."""
    out = tmp_path_factory.mktemp("ddp")
    _torchrun("train", out=out)
    return out


# ---------------------------------------------------------------- equivalence with one process


@pytest.mark.parametrize("accumulation", [1, 2])
def test_two_processes_train_like_one_with_the_global_batch(two_process_run, tmp_path, accumulation):
    """2 ranks × batch 4 equal 1 process × batch 8 (padded token labels, GA 1 and 2): final parameters and
    every logged loss, grad norm and learning rate within 1e-6; both ranks hold identical parameters."""
    meta0, params0 = _load(two_process_run, f"rank0-trainer-ga{accumulation}")
    meta1, params1 = _load(two_process_run, f"rank1-trainer-ga{accumulation}")
    reference = ddp_worker.trainer_run(str(tmp_path), 1, accumulation)
    assert all(torch.equal(params0[k], params1[k]) for k in params0)
    _assert_params_close(params0, reference["params"], 1e-6)
    assert len(meta0["logs"]) == len(reference["logs"]) == 2 * 4 // accumulation
    for got, want in zip(meta0["logs"], reference["logs"]):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-6, rel=0), (key, got, want)
    assert meta0["logs"] == meta1["logs"]  # the loss is the global batch's on every rank


def test_two_process_evaluation_equals_one_process_exactly(two_process_run, tmp_path):
    """Metrics computed on the gathered predictions of 13 rows (batches of 3: ranks get 3 and 2, the last short)
    equal the 1-process metrics bit for bit, on every rank; predict() gathers exactly 13 rows, in order."""
    reference = ddp_worker.trainer_run(str(tmp_path), 1, 1)
    for rank in (0, 1):
        meta, _ = _load(two_process_run, f"rank{rank}-trainer-ga1")
        assert meta["eval"] == reference["eval"]
        assert meta["eval"]["eval_rows"] == 13.0
        assert meta["predictions"][0] == meta["label_ids"][0] == 13
        assert meta["predictions"] == reference["predictions"]


def test_functional_loop_under_torchrun_matches_one_process(two_process_run):
    """The compose-your-own loop (wrap_model, train_batches, train_step, evaluate) is the same code in both
    runs; losses and parameters agree within 1e-6, evaluation (of those parameters) within 1e-9 and equally on
    both ranks; all_reduce_metrics averages the ranks."""
    meta, params = _load(two_process_run, "rank0-functional")
    meta1, _ = _load(two_process_run, "rank1-functional")
    reference = ddp_worker.functional_run(1)
    assert meta["losses"] == pytest.approx(reference["losses"], abs=1e-6, rel=0)
    _assert_params_close(params, reference["params"], 1e-6)
    assert meta["eval"] == meta1["eval"]
    assert meta["eval"] == pytest.approx(reference["eval"], abs=1e-9, rel=0)
    assert meta["reduced"] == meta1["reduced"] == {"rank_loss": pytest.approx(meta["losses"][-1], abs=1e-12)}


def test_kill_and_resume_with_two_processes_is_bitwise(two_process_run, tmp_path):
    """A 2-process run (dropout on) SIGKILLed after step 5, then resumed from its last checkpoint (step 4),
    ends with weights torch.equal to the uninterrupted 2-process run's, and the same log history."""
    killed = _torchrun("killed", out=tmp_path, check=False)
    assert killed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir() if p.name.startswith("checkpoint")) == \
        ["checkpoint-2", "checkpoint-4"]
    _torchrun("resume", out=tmp_path)
    want_meta, want = _load(two_process_run, "rank0-uninterrupted")
    for rank in (0, 1):
        meta, got = _load(tmp_path, f"rank{rank}-resumed")
        assert all(torch.equal(got[k], want[k]) for k in want)
        assert meta["logs"] == want_meta["logs"] and len(meta["logs"]) == 6  # steps 1-4 restored from checkpoint-4
        assert meta["flags"] == [rank == 0, rank == 0]  # not the saving process's flags from trainer_state.json


def test_sigterm_stops_every_process_after_the_same_step(tmp_path):
    """SIGTERM to torchrun (a preempted job) reaches both processes at slightly different moments; they agree on
    one last step, rank 0 commits checkpoint-<that step> between barriers, and both return normally from train()."""
    import signal
    import time

    from trainkit import verify_checkpoint

    env = {k: v for k, v in os.environ.items() if k not in ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_port()}",
               str(ROOT / "tests" / "ddp_worker.py"), "sigterm", str(tmp_path)]
    agent = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not (tmp_path / "sigterm" / "running").exists() and agent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    agent.send_signal(signal.SIGTERM)
    output = agent.communicate(timeout=180)[0]
    meta0, params = _load(tmp_path, "rank0-sigterm")
    meta1 = json.loads((tmp_path / "rank1-sigterm.json").read_text())
    assert meta0["step"] == meta1["step"] and 3 <= meta0["step"] < 100_000, output[-3000:]
    path = tmp_path / "sigterm" / f"checkpoint-{meta0['step']}"
    verify_checkpoint(path)
    saved = load_file(str(path / "model.safetensors"))
    assert all(torch.equal(saved[k], params[k]) for k in saved)


def test_multi_node_rendezvous(tmp_path):
    """Two torchrun agents as two nodes (--nnodes=2, c10d rendezvous on one endpoint, one process each) run
    the functional loop: LOCAL_RANK is 0 on both, RANK 0 and 1, and the result equals one process within 1e-6."""
    port = _port()
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=trainkit-test", str(ROOT / "tests" / "ddp_worker.py"),
               "functional", str(tmp_path)]
    nodes = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    meta0, params0 = _load(tmp_path, "rank0-functional")
    meta1, params1 = _load(tmp_path, "rank1-functional")
    reference = ddp_worker.functional_run(1)
    assert meta0["losses"] == meta1["losses"] == pytest.approx(reference["losses"], abs=1e-6, rel=0)
    assert meta0["process"] == [0, 0, 2] and meta1["process"] == [1, 0, 2]
    assert all(torch.equal(params0[k], params1[k]) for k in params0)


# ---------------------------------------------------------------- FSDP (fully_shard) on CPU/gloo


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """One torchrun launch of the 'fsdp' scenario: functional loop with a checkpoint round trip, Trainer(fsdp=...)
    with a checkpoint per epoch, and a fresh sharded Trainer resumed from the first epoch's checkpoint."""
    out = tmp_path_factory.mktemp("fsdp")
    _torchrun("fsdp", out=out)
    return out


def test_fsdp_functional_loop_matches_one_process(fsdp_run):
    """shard_model + train_step (GA 2, compute_loss_func) over 2 ranks equals one process on the global batch within
    1e-6; evaluation on unevenly split batches (3 and 2) equals it within 1e-9; a checkpoint saved by both ranks and
    loaded into a fresh sharded model continues bit for bit (same next loss, same parameters)."""
    meta, params = _load(fsdp_run, "rank0-fsdp-functional")
    meta1 = json.loads((fsdp_run / "rank1-fsdp-functional.json").read_text())
    reference = ddp_worker.functional_run(1)
    assert meta["losses"] == meta1["losses"] == pytest.approx(reference["losses"], abs=1e-6, rel=0)
    _assert_params_close(params, reference["params"], 1e-6)
    assert meta["eval"] == meta1["eval"] == pytest.approx(reference["eval"], abs=1e-9, rel=0)
    for after in (meta["after_load"], meta1["after_load"]):
        assert after["same_params"] and after["losses"][0] == after["losses"][1]


def test_fsdp_trainer_matches_one_process(fsdp_run, tmp_path):
    """Trainer(args=TrainingArguments(fsdp="full_shard")) over 2 ranks: logged losses and gathered parameters equal
    the 1-process run within 1e-6; the untrained model's evaluation equals it exactly."""
    meta, params = _load(fsdp_run, "rank0-fsdp-trainer")
    reference = ddp_worker.trainer_run(str(tmp_path), 1, 2)
    _assert_params_close(params, reference["params"], 1e-6)
    assert [e["loss"] for e in meta["logs"]] == pytest.approx([e["loss"] for e in reference["logs"]], abs=1e-6, rel=0)
    assert meta["eval"] == reference["eval"]
    assert meta["predictions"][0] == 13


def test_fsdp_trainer_resume_is_bitwise(fsdp_run):
    """A fresh sharded Trainer resumed from checkpoint-2 (written by the FSDP run) ends torch.equal to that run."""
    meta, resumed = _load(fsdp_run, "rank0-fsdp-resumed")
    uninterrupted, final = _load(fsdp_run, "rank0-fsdp-trainer")
    assert all(torch.equal(resumed[k], final[k]) for k in final)
    assert meta["logs"] == [e["loss"] for e in uninterrupted["logs"]]


def test_fsdp_checkpoints_are_one_process_checkpoints(fsdp_run):
    """A checkpoint written under FSDP is the unsharded format: load_checkpoint restores it into a plain model and
    optimizer (weights equal to the gathered ones, Adam state for every parameter at step 4), and
    AutoModelForTokenClassification.from_pretrained opens it."""
    from transformers import AutoModelForTokenClassification

    from trainkit import load_checkpoint, make_optimizer

    path = fsdp_run / "fsdp-trainer" / "checkpoint-4"
    _, final = _load(fsdp_run, "rank0-fsdp-trainer")
    model = ddp_worker.tiny_token_bert(seed=0)
    optimizer = make_optimizer(model, "adamw_torch", lr=1e-2)
    state = load_checkpoint(path, model, optimizer)
    assert state.step == 4
    assert all(torch.equal(model.state_dict()[k], final[k]) for k in final)
    steps = {float(s["step"]) for s in optimizer.state.values()}
    assert len(optimizer.state) == len(list(model.parameters())) and steps == {4.0}
    opened = AutoModelForTokenClassification.from_pretrained(path, torch_dtype=torch.float64)
    assert torch.equal(opened.classifier.weight, final["classifier.weight"])


# ---------------------------------------------------------------- sharding rules (pure, against accelerate)


@given(n=st.integers(1, 60), batch=st.integers(1, 7), world=st.integers(1, 4), drop_last=st.booleans())
def test_shard_batches_is_accelerates_batch_sampler_shard(n, batch, world, drop_last):
    """For any rows, batch size, world size and drop_last: each rank's batches are exactly those of accelerate's
    BatchSamplerShard (even_batches=True) over the same order; every rank has num_batches(...) of them; and
    without drop_last the union over ranks covers every row."""
    from accelerate.data_loader import BatchSamplerShard

    order = torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist()
    union = set()
    for rank in range(world):
        sampler = torch.utils.data.BatchSampler(order, batch, drop_last)
        want = list(BatchSamplerShard(sampler, num_processes=world, process_index=rank)) if world > 1 else list(sampler)
        got = shard_batches(order, batch_size=batch, rank=rank, world_size=world, drop_last=drop_last)
        assert [rows for _, rows in got] == want
        assert len(got) == num_batches(n, batch, drop_last=drop_last, world_size=world)
        assert [number % world for number, _ in got] == [rank] * len(got)
        union |= {row for _, rows in got for row in rows}
    if not drop_last:
        assert union == set(order)


@given(n=st.integers(1, 40), batch=st.integers(1, 5), world=st.integers(2, 3), drop_last=st.booleans())
def test_stream_sharding_is_accelerates_iterable_dataset_shard(n, batch, world, drop_last):
    """An iterable dataset under W processes: rank r's rows are those accelerate's IterableDatasetShard gives it."""
    from accelerate.data_loader import IterableDatasetShard

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(n))

    for rank in range(world):
        want = list(IterableDatasetShard(Stream(), batch_size=batch, drop_last=drop_last, num_processes=world,
                                         process_index=rank))
        got = [row for b in iterable_batches(Stream(), batch_size=batch, collator=list, drop_last=drop_last,
                                             rank=rank, world_size=world) for row in b]
        assert got == want


# ---------------------------------------------------------------- set-up errors and helpers


@pytest.mark.parametrize(("change", "words"), [
    ({"RANK": "2"}, ["RANK=2", "WORLD_SIZE=2", "0 <= RANK < WORLD_SIZE"]),
    ({"WORLD_SIZE": "two"}, ["WORLD_SIZE='two'", "integer"]),
    ({"LOCAL_RANK": "3"}, ["LOCAL_RANK=3", "LOCAL_WORLD_SIZE=2"]),
    ({"LOCAL_WORLD_SIZE": "4"}, ["LOCAL_WORLD_SIZE=4", "WORLD_SIZE=2"]),
    ({"MASTER_PORT": "0"}, ["MASTER_PORT=0", "1..65535"]),
    ({"MASTER_ADDR": None}, ["MASTER_ADDR is not set"]),
    ({"WORLD_SIZE": None, "MASTER_PORT": None}, ["WORLD_SIZE is not set", "MASTER_PORT is not set"]),
])
def test_inconsistent_torchrun_environment_is_named(change, words):
    env = {k: v for k, v in {**ENV, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        setup_distributed(environ=env)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert all(w in message for w in words), message
    assert "torchrun --nproc_per_node" in message


def test_unavailable_backend_is_refused_before_any_collective():
    with pytest.raises(UnsupportedOptionError, match=r"backend='nccl'.*not available.*gloo"):
        setup_distributed(backend="nccl", environ=ENV)
    with pytest.raises(ConfigError, match="backend='nccll'.*expected one of nccl, gloo"):
        setup_distributed(backend="nccll", environ=ENV)
    with pytest.raises(ConfigError, match="timeout=0"):
        setup_distributed(timeout=0, environ=ENV)


def test_trainer_reads_torchrun_variables(monkeypatch):
    """Trainer(...) under a broken torchrun environment fails in its constructor, naming the variable."""
    from tests.strategies import mlp
    from trainkit import Trainer, TrainingArguments

    for name, value in {**ENV, "RANK": "5"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="RANK=5"):
        Trainer(model=mlp(), args=TrainingArguments(output_dir="unused", report_to="none"))


def test_helpers_work_in_one_process():
    """Without a process group every helper is the one-process identity, so a loop runs under python too."""
    net = torch.nn.Linear(2, 2)
    assert launch_env({}) is None and setup_distributed(environ={}) == ProcessInfo()
    assert wrap_model(net) is net and is_main_process() and broadcast_object({"a": 1}) == {"a": 1}
    assert all_reduce_metrics({"x": 3}, op="max") == {"x": 3.0}
    with pytest.raises(ConfigError, match="op='avg'"):
        all_reduce_metrics({"x": 1}, op="avg")


def test_rank_helpers_answer_from_the_environment_setup_read(monkeypatch):
    """local_rank()/is_main_process(local=True) follow the environment given to setup_distributed(environ=...),
    not os.environ (here: a process group of 4 is simulated, os.environ says LOCAL_RANK=0)."""
    import trainkit.distributed as dist

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 4)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 3)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(dist, "_launched", ProcessInfo(rank=3, world_size=4, local_rank=1, local_world_size=2))
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_main_process(local=True)) == (3, 4, 1, False)
    monkeypatch.setattr(dist, "_launched", None)  # not set up by trainkit: torchrun's variables
    assert dist.local_rank() == 0


def test_an_evaluation_set_smaller_than_the_processes_passes_the_dry_run(two_process_run):
    """One evaluation batch for two processes: train() starts (its dry run skips the empty share), evaluates,
    and both processes log the same eval_loss."""
    losses = [json.loads((two_process_run / f"rank{r}-small-eval.json").read_text())["eval_loss"] for r in (0, 1)]
    assert len(losses[0]) == 1 and losses[0] == losses[1]
