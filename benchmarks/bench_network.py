"""The notes' MLP (784 -> 50 -> ReLU -> 10): one SGD step at batch 64 per layer kind, torch.nn.Linear's
included, as `gemmlab bench-train` times it; with GEMMLAB_ASV_EXTRA=1 also the full MNIST-shaped
data set (random numbers of MNIST's shape, 50000 x 784: speed does not depend on the values) with
forward and backward timed separately, for the hand-written scratch model and the gemmlab.nn model,
and the peak memory of one training step."""

import functools

import torch
import torch.nn.functional as F

from gemmlab import nn as gnn
from gemmlab import scratch

from .common import EXTRA, FAST_BACKENDS, N_HIDDEN, N_IN, N_OUT, Sampled, mnist_shaped, require, slowdowns, slowed, warmed


@functools.cache
def prepared_step(layer: str, batch: int):
    """zero_grad, forward, cross-entropy, backward and SGD step of the 784-50-10 MLP, as a no-argument
    callable made once per process, slowed if the slowdown switch names the layer, and run once
    (gradient buffers, JIT warm-up) before anything is timed."""
    if layer == "torch.nn.Linear":
        model = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HIDDEN), torch.nn.ReLU(), torch.nn.Linear(N_HIDDEN, N_OUT))
    else:
        model = gnn.mlp([N_IN, N_HIDDEN, N_OUT], backend=layer)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, N_IN, generator=gen), torch.randint(0, N_OUT, (batch,), generator=gen)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return warmed(slowed(step, slowdowns().get(layer, 1.0)))


class TrainingStep(Sampled):
    """One SGD step of the 784-50-10 MLP on a batch of 64: what each backend does to a real step, next
    to torch.nn.Linear's. Built here rather than taken from gemmlab.bench (bench-train's work item)
    so that older commits, without it, still run."""

    params = [["torch.nn.Linear", *FAST_BACKENDS]]
    param_names = ["layer"]
    batch = 64

    def setup(self, layer):
        if layer != "torch.nn.Linear":
            require(layer)
        self.run = prepared_step(layer, self.batch)

    def time_step(self, layer):
        self.run()


class ScratchNetwork:
    params = [list(FAST_BACKENDS)]
    param_names = ["backend"]
    timeout = 180

    def setup(self, backend):
        require(backend)
        self.x, self.y = mnist_shaped()
        self.model = scratch.mlp(N_IN, N_HIDDEN, N_OUT, backend=backend, loss="ce")
        self.model(self.x, self.y)  # so backward has a forward pass to work from

    def time_forward(self, backend):
        self.model(self.x, self.y)

    def time_backward(self, backend):
        self.model.backward()

    def peakmem_step(self, backend):
        self.model(self.x, self.y)
        self.model.backward()


class TorchNetwork:
    params = [list(FAST_BACKENDS)]
    param_names = ["backend"]
    timeout = 180

    def setup(self, backend):
        require(backend)
        self.x, self.y = mnist_shaped()
        self.model = gnn.mlp([N_IN, N_HIDDEN, N_OUT], backend=backend)
        self.loss = F.cross_entropy(self.model(self.x), self.y)

    def time_forward(self, backend):
        with torch.no_grad():
            self.model(self.x)

    def time_backward(self, backend):
        self.loss.backward(retain_graph=True)  # the same graph each time: only the backward is timed

    def peakmem_step(self, backend):
        F.cross_entropy(self.model(self.x), self.y).backward()


if not EXTRA:  # out of the default selection, which `asv continuous` judges (see common.py)
    del ScratchNetwork, TorchNetwork
