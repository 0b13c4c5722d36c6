"""The notes' MLP (784 -> 50 -> ReLU -> 10) on MNIST-shaped data, per backend: forward and backward
timed separately, for the hand-written scratch model and for the gemmlab.nn model, plus the peak
memory of one training step; and one SGD step at batch 64 per layer kind, torch.nn.Linear's
included, as `gemmlab bench-train` times it. The data are random numbers of MNIST's shape (50000 x 784), not
MNIST itself: speed does not depend on the values."""

import torch
import torch.nn.functional as F

from gemmlab import nn as gnn
from gemmlab import scratch

from .common import FAST_BACKENDS, N_HIDDEN, N_IN, N_OUT, mnist_shaped, require


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


class TrainingStep:
    """zero_grad, forward, cross-entropy, backward and SGD step of the 784-50-10 MLP on a batch of 64:
    what each backend does to a real step, next to torch.nn.Linear's. Built here rather than taken
    from gemmlab.bench (bench-train's work item) so that older commits, without it, still run."""

    params = [["torch.nn.Linear", *FAST_BACKENDS]]
    param_names = ["layer"]
    timeout = 120
    batch = 64

    def setup(self, layer):
        if layer == "torch.nn.Linear":
            self.model = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HIDDEN), torch.nn.ReLU(), torch.nn.Linear(N_HIDDEN, N_OUT))
        else:
            require(layer)
            self.model = gnn.mlp([N_IN, N_HIDDEN, N_OUT], backend=layer)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(self.batch, N_IN, generator=gen), torch.randint(0, N_OUT, (self.batch,), generator=gen)
        self.time_step(layer)  # the first step (gradient buffers, JIT warm-up) is not what is timed

    def time_step(self, layer):
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()
