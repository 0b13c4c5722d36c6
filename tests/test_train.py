"""Short training runs on the bundled digits: every compiled backend and torch learn, reproducibly."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import CONTENDERS, idx_bytes, write_idx, write_pickle

import gemmlab
from gemmlab.train import TrainConfig, train


@pytest.mark.parametrize("backend", CONTENDERS)
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


def test_nn_model_learns_with_mse():
    epochs = train(TrainConfig(backend="cpp", model="nn", loss="mse", epochs=5, seed=0, lr=0.01)).epochs
    assert epochs[-1].valid_loss < 0.5 * epochs[0].train_loss, epochs
    assert epochs[-1].valid_accuracy >= 0.3, epochs  # the label as a number, rounded: far above 10% chance


def readable_digits(rng, n):
    """n 28x28 uint8 images and labels, the label written in the image: class c lights rows 2c+4 and
    2c+5 over noise, so a short training run must learn it if the files were read right."""
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        image[2 * label + 4:2 * label + 6, 4:24] = 255
    return images, labels


@pytest.mark.parametrize("layout", ["idx", "pickle"])
def test_training_on_mnist_files(tmp_path, layout):
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_valid, y_valid) = readable_digits(rng, 300), readable_digits(rng, 100)
    if layout == "idx":  # the original MNIST files, gzipped
        path = tmp_path / "mnist"
        path.mkdir()
        for name, array in [("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", y_train),
                            ("t10k-images-idx3-ubyte", x_valid), ("t10k-labels-idx1-ubyte", y_valid)]:
            write_idx(path / f"{name}.gz", idx_bytes(array))
    else:  # the course's pickle: flattened float32 images in [0, 1], int64 labels
        def split(x, y):
            return x.reshape(len(x), 784).astype(np.float32) / 255, y.astype(np.int64)
        path = write_pickle(tmp_path / "mnist.pkl.gz", (split(x_train, y_train), split(x_valid, y_valid), split(x_valid, y_valid)))
    history = train(TrainConfig(backend="cpp", data=str(path), epochs=4, batch_size=32, seed=0))
    assert history.dataset == "mnist"
    assert history.epochs[-1].valid_accuracy >= 0.9, history.epochs


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
