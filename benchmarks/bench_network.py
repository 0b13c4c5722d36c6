"""The notes' MLP (784 -> 50 -> ReLU -> 10) on MNIST-shaped data, per backend: forward and backward
timed separately, for the hand-written scratch model and for the gemmlab.nn model, plus the peak
memory of one training step. The data are random numbers of MNIST's shape (50000 x 784), not
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
