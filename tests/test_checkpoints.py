"""Checkpoints of `gemmlab train` (gemmlab.checkpoints): a run killed mid-epoch and resumed ends bit for
bit where an uninterrupted one does; a checkpoint is replaced atomically; a bad one is a clear error."""

import dataclasses
import os
import random
import signal

import numpy as np
import pytest
import torch
from conftest import assert_same_training
from fresh_python import run_python, run_train_command

from gemmlab import checkpoints
from gemmlab.checkpoints import CheckpointError
from gemmlab.train import TrainConfig, train

# 3 epochs of 8 steps on digits' 1438 training images.
CONFIG = TrainConfig(backend="cpp", epochs=3, batch_size=192, seed=5)


@pytest.mark.parametrize("model", ["nn", "scratch"])
def test_a_run_killed_mid_epoch_resumes_bit_for_bit(tmp_path, threads, model):
    cfg = dataclasses.replace(CONFIG, model=model)
    killed, whole = tmp_path / "killed.pt", tmp_path / "whole.pt"
    # SIGKILL in the middle of epoch 3 (step 4 of 8): the checkpoint of epoch 2 must survive it.
    code = f"""
import os, signal, torch
from gemmlab.train import TrainConfig, train
torch.set_num_threads(2)
train(TrainConfig(**{dataclasses.asdict(cfg)!r}), checkpoint={str(killed)!r},
      on_step=lambda done, total: done == 20 and os.kill(os.getpid(), signal.SIGKILL))
"""
    result = run_python("-c", code)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert torch.load(killed, weights_only=True)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["killed.pt"]  # no temporary file left behind
    torch.set_num_threads(2)
    resumed = train(cfg, checkpoint=killed, resume=killed)
    uninterrupted = train(cfg, checkpoint=whole)
    assert_same_training(killed, whole, exact=True)
    assert [e.epoch for e in resumed.epochs] == [1, 2, 3]  # epochs 1 and 2 come from the checkpoint
    for got, want in zip(resumed.epochs, uninterrupted.epochs):
        assert (got.train_loss, got.valid_loss, got.valid_accuracy) == (want.train_loss, want.valid_loss, want.valid_accuracy)


def test_a_finished_run_resumed_trains_no_more(tmp_path):
    path = tmp_path / "run.pt"
    done = train(dataclasses.replace(CONFIG, epochs=1), checkpoint=path)
    before = path.read_bytes()
    again = train(dataclasses.replace(CONFIG, epochs=1), checkpoint=path, resume=path)
    assert again.epochs == done.epochs and path.read_bytes() == before


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    checkpoints.save(path, {"epoch": 1, "weights": torch.arange(5.0)})

    def save_half_then_fail(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", save_half_then_fail)
    with pytest.raises(checkpoints.CheckpointError, match="No space left"):
        checkpoints.save(path, {"epoch": 2, "weights": torch.zeros(5)})
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # the temporary file is gone too
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.arange(5.0))


def test_global_generators_are_restored():
    states = checkpoints.rng_states()
    draws = torch.rand(3), np.random.rand(3), random.random()
    checkpoints.set_rng_states(states)
    again = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "run.pt"
    train(dataclasses.replace(CONFIG, epochs=1), checkpoint=path)
    return path


def _garbage(path, good):
    path.write_bytes(os.urandom(300))


def _truncated(path, good):
    path.write_bytes(good.read_bytes()[:-100])


def _foreign(path, good):
    torch.save({"weights": torch.ones(3)}, path)


def _edited(path, good):  # same settings, but a weight of another shape
    state = torch.load(good, weights_only=True)
    state["model"]["0.weight"] = torch.ones(3, 64)
    torch.save(state, path)


@pytest.mark.parametrize("make, says", [
    (None, "no such checkpoint file"),
    (_garbage, "not a readable checkpoint"),
    (_truncated, "not a readable checkpoint"),
    (_foreign, "not a checkpoint written by gemmlab train"),
    (_edited, r"(?s)contents do not fit this run .*size mismatch for 0.weight"),
])
def test_a_bad_checkpoint_is_a_clear_error(tmp_path, good_checkpoint, make, says):
    path = tmp_path / "bad.pt"
    if make:
        make(path, good_checkpoint)
    with pytest.raises(CheckpointError, match=says):
        train(CONFIG, resume=path)


def test_a_checkpoint_of_other_settings_is_refused_naming_them(good_checkpoint):
    with pytest.raises(CheckpointError, match=r"other settings \(hidden 50 there, 20 here; lr 0.1 there, 0.2 here\)"):
        train(dataclasses.replace(CONFIG, hidden=20, lr=0.2), resume=good_checkpoint)
    train(dataclasses.replace(CONFIG, epochs=2), resume=good_checkpoint)  # more epochs is no other setting


def test_a_checkpoint_in_a_missing_directory_is_refused_before_training(tmp_path):
    steps = []
    with pytest.raises(CheckpointError, match="does not exist"):
        train(CONFIG, checkpoint=tmp_path / "no" / "run.pt", on_step=lambda done, total: steps.append(done))
    assert steps == []


def test_the_command_reports_a_bad_checkpoint(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    result = run_train_command("--epochs", 1, "--resume", path)
    assert result.returncode == 1
    assert f"gemmlab train: error: {path}: not a readable checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
