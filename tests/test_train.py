"""Short training runs on the bundled digits: every compiled backend and torch learn, reproducibly."""

import json
import subprocess
import sys

import pytest

import gemmlab
from gemmlab.train import TrainConfig, train


@pytest.mark.parametrize("backend", ["numba", "cython", "cpp", "torch"])
def test_digits_reach_95_percent(backend):
    history = train(TrainConfig(backend=backend, epochs=5, seed=0))
    assert history.dataset.startswith("digits")
    assert history.epochs[-1].valid_accuracy >= 0.95, history.epochs


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_scratch_model_learns(loss):
    epochs = train(TrainConfig(backend="cpp", model="scratch", loss=loss, epochs=5, seed=0,
                               lr=0.1 if loss == "ce" else 0.01)).epochs
    assert epochs[-1].valid_loss < 0.5 * epochs[0].train_loss
    assert epochs[-1].valid_accuracy >= (0.9 if loss == "ce" else 0.3)


def test_same_seed_same_result_other_seed_differs():
    runs = [train(TrainConfig(backend="cpp", epochs=2, seed=s)).epochs[-1] for s in (3, 3, 4)]
    assert runs[0].valid_loss == runs[1].valid_loss and runs[0].valid_accuracy == runs[1].valid_accuracy
    assert runs[0].valid_loss != runs[2].valid_loss


@pytest.mark.parametrize("model", ["nn", "scratch"])
def test_training_without_a_backend_follows_the_default(kernel_calls, model):
    calls = kernel_calls("cython", "torch")
    with gemmlab.use_backend("cython"):
        train(TrainConfig(model=model, epochs=1))
    assert calls and {c.backend for c in calls} == {"cython"}


def test_unknown_choices_raise():
    with pytest.raises(ValueError, match="unknown model"):
        train(TrainConfig(model="cnn"))
    with pytest.raises(ValueError, match="unknown loss"):
        train(TrainConfig(loss="hinge"))


def test_train_command(tmp_path):
    out = tmp_path / "train.json"
    result = subprocess.run([sys.executable, "-m", "gemmlab", "train", "--backend", "cython", "--epochs", "3", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "epoch   3" in result.stdout and "final validation accuracy" in result.stdout
    epochs = json.loads(out.read_text())["epochs"]
    assert len(epochs) == 3 and epochs[-1]["valid_accuracy"] > 0.9
