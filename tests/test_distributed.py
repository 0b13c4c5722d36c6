"""Data-parallel `gemmlab train` (gemmlab.distributed): two processes take the steps one process takes,
under `--nproc` and under torchrun, for the C++ op and a Python-op backend; a worker that fails
ends the launch in bounded time; a taken port is reported. All on 127.0.0.1 and the small digits."""

import dataclasses
import re
import socket
from pathlib import Path

import pytest
from conftest import assert_same_training
from fresh_python import run_python, run_train_command

from gemmlab import cli
from gemmlab.data import load_digits
from gemmlab.distributed import Group
from gemmlab.train import TrainConfig, check, train

# Batches of 479 cut digits' 1438 training images into 3 batches split 240 + 239 between two
# processes, and a last batch of 1 image: one process's share of it is empty.
CONFIG = TrainConfig(epochs=1, batch_size=479, seed=1)
TESTS = Path(__file__).parent


def options(cfg: TrainConfig) -> list:
    return ["--backend", cfg.backend, "--epochs", cfg.epochs, "--batch-size", cfg.batch_size, "--seed", cfg.seed]


def test_the_batches_split_unevenly():
    assert len(load_digits().y_train) == 3 * CONFIG.batch_size + 1


def test_two_processes_take_the_steps_of_one(tmp_path):
    """gemmlab's C++ op under DDP: the mean of the shares' gradients is the whole batch's gradient.
    The checkpoint rank 0 writes then resumes in one process, as the one-process run goes on."""
    cfg = dataclasses.replace(CONFIG, backend="cpp")
    two, one = tmp_path / "two.pt", tmp_path / "one.pt"
    result = run_train_command("--nproc", 2, "--threads", 2, *options(cfg), "--checkpoint", two)
    assert result.returncode == 0, result.stderr
    assert "with backend 'cpp', 2 processes x 1 thread(s), seed 1" in result.stdout
    assert "data-parallel: 2 processes on this machine, sharing its 2 threads" in result.stdout
    assert len(re.findall(r"^epoch +1 ", result.stdout, re.M)) == 1  # rank 0 reports, alone
    assert "Grad strides" not in result.stderr  # DDP would warn if it had to copy a gradient
    train(cfg, checkpoint=one)
    assert_same_training(two, one, exact=False)
    longer = dataclasses.replace(cfg, epochs=2)
    train(longer, checkpoint=two, resume=two)
    train(longer, checkpoint=one)
    assert_same_training(two, one, exact=False)


def test_torchrun_resumes_and_trains_a_python_op_backend(tmp_path):
    """`torchrun -m gemmlab train` (the multi-machine form, here on one) with einsum, a Python custom
    op: two processes resume a one-process checkpoint and end where one process does."""
    cfg = dataclasses.replace(CONFIG, backend="einsum", epochs=2)
    first, two, one = tmp_path / "first.pt", tmp_path / "two.pt", tmp_path / "one.pt"
    train(dataclasses.replace(cfg, epochs=1), checkpoint=first)
    result = run_python("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gemmlab", "train",
                        *map(str, options(cfg)), "--resume", str(first), "--checkpoint", str(two))
    assert result.returncode == 0, result.stderr
    assert "with backend 'einsum', 2 processes x 1 thread(s), seed 1" in result.stdout  # torchrun: OMP_NUM_THREADS=1
    assert re.search(r"^epoch +2 ", result.stdout, re.M) and not re.search(r"^epoch +1 ", result.stdout, re.M)
    assert "Grad strides" not in result.stderr
    train(cfg, checkpoint=one)
    assert_same_training(two, one, exact=False)


@pytest.mark.parametrize("failure, says", [
    ("raises", r"worker 1 of 2 raised an exception:\nTraceback.*RuntimeError: rank 1 fails on purpose"),
    ("exits", r"worker 1 of 2 exited with status 3"),
    ("killed", r"worker 1 of 2 was killed by SIGKILL"),
    ("hangs", r"worker 0 of 2 raised an exception:\n.*(?i:timed out|timeout).*the others were stopped"),
], ids=["raises", "exits", "killed", "hangs"])
def test_a_failing_worker_ends_the_launch(failure, says):
    """Rank 1 fails while rank 0 waits for it in a collective. The collectives' timeout is 10 minutes
    (5 s where rank 1 hangs): only the launcher stopping rank 0 ends the run within the 2 minutes."""
    code = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import dist_workers
from gemmlab import distributed
try:
    distributed.launch(2, dist_workers.{failure}, timeout={5 if failure == "hangs" else 600})
except distributed.WorkerFailed as e:
    print(e)
    sys.exit(1)
"""
    result = run_python("-c", code, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(says, result.stdout, re.S), result.stdout


def test_a_port_in_use_is_reported():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_train_command("--nproc", 2, "--master-port", port, "--epochs", 1, timeout=60)
    assert result.returncode == 1
    assert f"gemmlab train: error: port {port} is already in use by another program" in result.stderr


def test_a_bad_port_number_is_refused(capsys):
    assert cli.main(["train", "--nproc", "2", "--master-port", "70000"]) == 1
    assert "port 70000 is not a TCP port number" in capsys.readouterr().err


def test_a_bad_checkpoint_stops_every_process(tmp_path):
    """Rank 0 reads the checkpoint, says what is wrong with it and fails; the launcher stops the other process."""
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    result = run_train_command("--nproc", 2, "--epochs", 1, "--resume", path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.count(f"gemmlab train: error: {path}: not a readable checkpoint") == 1
    assert "gemmlab train: error: worker 0 of 2 exited with status 1" in result.stderr


def test_the_scratch_model_trains_in_one_process_only():
    with pytest.raises(ValueError, match="'scratch' model trains in one process only"):
        check(TrainConfig(model="scratch"), world_size=2)
    with pytest.raises(ValueError, match="'scratch' model trains in one process only"):
        train(TrainConfig(model="scratch"), group=Group(rank=0, world_size=2))


def test_under_torchrun_nproc_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["train", "--nproc", "2"]) == 1
    assert "under torchrun, torchrun starts the processes" in capsys.readouterr().err
