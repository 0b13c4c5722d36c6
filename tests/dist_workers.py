"""Worker functions for gemmlab.distributed.launch in tests/test_distributed.py: the spawned
workers import them by name. Rank 1 fails in some way while rank 0 waits for it in a collective."""

import os
import signal
import time

import torch.distributed as dist


def raises(group):
    if group.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    dist.barrier()


def exits(group):
    if group.rank == 1:
        return 3
    dist.barrier()


def killed(group):
    if group.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()


def hangs(group):
    """Rank 1 never reaches the barrier: rank 0's collective times out (the launch's timeout)."""
    if group.rank == 1:
        time.sleep(600)
    dist.barrier()
