"""Data-parallel plumbing on torch.distributed: start N local worker processes, or join a torchrun
launch, and the few collectives training needs.

    from gemmlab import distributed
    distributed.launch(2, fn, args)          # fn(group, *args) in 2 local processes, gloo on 127.0.0.1
    with distributed.from_environment() as group:   # under torchrun: RANK, WORLD_SIZE, ... set by it
        fn(group, *args)

A worker that raises or dies ends the whole launch: `launch` stops the others and raises
WorkerFailed naming the workers that failed (torchrun's agent does the same for its processes). A collective that waits
longer than `timeout` seconds for a peer raises instead of hanging (the case of a lost machine).
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import socket
import time
from multiprocessing import connection as mp_connection
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

LOCALHOST = "127.0.0.1"
DEFAULT_TIMEOUT = 300.0  # seconds; rank 0 validates and checkpoints while the others wait for it


class WorkerFailed(RuntimeError):
    """A worker process raised, exited with an error status or was killed; the others were stopped."""


class PortInUse(RuntimeError):
    """The rendezvous port is taken by another program."""


@dataclass(frozen=True)
class Group:
    """Where this process sits in a data-parallel run: rank 0 of 1 when it runs alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Group()


def under_torchrun() -> bool:
    """True in a process started by torchrun (or a launcher that sets the same variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def free_port() -> int:
    """A TCP port nothing listens on now (the system picks it)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def check_port(port: int) -> None:
    """PortInUse if a program listens on `port`: rank 0's rendezvous server binds it on every interface."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port number (1 to 65535)")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            s.bind(("", port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(f"port {port} is already in use by another program: pick a free one with --master-port, "
                            f"or leave --master-port out to let the system choose") from None


@contextmanager
def from_environment(timeout: float = DEFAULT_TIMEOUT) -> Iterator[Group]:
    """Join the process group that torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) describe; leave it after."""
    group = Group(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)),
                  int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    # gemmlab train keeps its tensors on the CPU: gloo (NCCL only reduces CUDA tensors).
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    try:
        yield group
    finally:
        dist.destroy_process_group()


def launch(nproc: int, fn: Callable, args: tuple = (), port: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Run fn(group, *args) in `nproc` new local processes, joined in one gloo process group on 127.0.0.1.

    fn must be importable (a module-level function) and args picklable: the workers are fresh
    interpreters (spawn), so no OpenMP or CUDA state is inherited. A worker's non-zero return value
    is its exit status. Returns when all have finished; if one fails, the others are stopped and
    WorkerFailed says which failed and how. port: the rendezvous port (PortInUse if taken); None: a free one.
    """
    if nproc < 1:
        raise ValueError(f"need at least one process, got nproc={nproc}")
    if port is None:
        port = free_port()
    else:
        check_port(port)
    context = mp.start_processes(_worker, args=(nproc, port, timeout, fn, args), nprocs=nproc, join=False,
                                 start_method="spawn")
    failed = _watch(context.processes)
    if failed:
        stopped = "\nthe others were stopped" if len(failed) < nproc else ""
        raise WorkerFailed("\n".join(_how_it_failed(i, nproc, context) for i in failed) + stopped)


# After the first failure, how long the others get to end by themselves before they are stopped.
# One worker's failure usually fails its peers too (a connection reset in their collective), often
# before its own exit is seen: waiting lets every worker's own account be recorded, the cause's too.
FAILURE_GRACE_SECONDS = 5.0


def _watch(processes: list) -> list[int]:
    """Wait for the processes; once one fails, give the rest FAILURE_GRACE_SECONDS, then stop them.
    Returns the indices of those that failed of their own accord (empty if all succeeded)."""
    pending = {p.sentinel: i for i, p in enumerate(processes)}
    deadline = None
    while pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = mp_connection.wait(list(pending), timeout=left)
        if not ready:
            break
        for sentinel in ready:
            processes[pending.pop(sentinel)].join()
        if deadline is None and any(p.exitcode not in (None, 0) for p in processes):
            deadline = time.monotonic() + FAILURE_GRACE_SECONDS
    stopped = set(pending.values())
    for i in stopped:
        processes[i].terminate()
    for i in stopped:
        processes[i].join(FAILURE_GRACE_SECONDS)
        if processes[i].exitcode is None:  # deaf to SIGTERM (stuck in native code)
            processes[i].kill()
            processes[i].join()
    return [i for i, p in enumerate(processes) if i not in stopped and p.exitcode != 0]


def _how_it_failed(index: int, nproc: int, context: mp.ProcessContext) -> str:
    exitcode, error_file = context.processes[index].exitcode, Path(context.error_files[index])
    if error_file.exists():  # it raised: torch's wrapper left the traceback there
        with error_file.open("rb") as f:
            trace = pickle.load(f)
        error_file.unlink()
        return f"worker {index} of {nproc} raised an exception:\n{trace.rstrip()}"
    if exitcode < 0:
        return f"worker {index} of {nproc} was killed by {signal.Signals(-exitcode).name}"
    return f"worker {index} of {nproc} exited with status {exitcode}"


def _worker(local_rank: int, nproc: int, port: int, timeout: float, fn: Callable, args: tuple) -> None:
    os.environ.update(RANK=str(local_rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR=LOCALHOST, MASTER_PORT=str(port))
    with from_environment(timeout) as group:
        status = fn(group, *args)
    if status:
        raise SystemExit(status)


def all_sum(value: float, group: Group) -> float:
    """The sum of `value` over every process of the group (float64)."""
    if group.world_size == 1:
        return value
    total = torch.tensor(value, dtype=torch.float64)
    dist.all_reduce(total)
    return total.item()


def from_main(make: Callable, group: Group):
    """make() run on rank 0 only (say, reading a file only its machine has), its result sent to every
    process. If it raises on rank 0, the others wait until their launcher stops them (or time out)."""
    box = [make() if group.is_main else None]
    if group.world_size > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]
