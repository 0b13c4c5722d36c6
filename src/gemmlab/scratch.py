"""The course's small network, with the gradients written by hand: no autograd anywhere.

Following the notes (fast.ai lesson 8, "backprop from the foundations"): each layer is a Module
that remembers its inputs and output in the forward pass, and in the backward pass writes the
gradient of the loss with respect to each input (and parameter) on that tensor as attribute `.g`.
Every matrix product, forward and backward, goes through gemmlab.matmul on the layer's backend,
so the network runs on any rung of the ladder. A layer built without a backend (backend=None, the
default) follows gemmlab's default backend when its forward pass runs (gemmlab.use_backend /
gemmlab.set_backend), and its backward pass uses the backend that forward pass ran on.

    model = mlp(784, 50, 10, backend="cpp", loss="ce")
    loss = model(x, y)           # forward: layers, then the loss
    model.backward()             # fills p.g for every p in model.params()
    for p in model.params():
        p -= lr * p.g
"""

from __future__ import annotations

import math

import torch

# Imported as the package and looked up at call time (gemmlab.matmul, not `from gemmlab import
# matmul`), so tests can swap gemmlab.matmul for a wrapper that records the calls.
import gemmlab

__all__ = ["CrossEntropy", "Lin", "Model", "Module", "Mse", "Relu", "kaiming_normal", "mlp", "relu_gain"]


def relu_gain(negative_slope: float = 0.0) -> float:
    """Kaiming's gain for a (leaky) ReLU: sqrt(2 / (1 + slope**2)); sqrt(2) for a plain ReLU.

    A ReLU zeroes half of a zero-mean input, halving its second moment; scaling the weights
    before it by sqrt(2) gives that back, so activations neither shrink nor grow layer by layer.
    """
    return math.sqrt(2.0 / (1.0 + negative_slope**2))


def kaiming_normal(fan_in: int, fan_out: int, mode: str = "fan_in", gain: float = math.sqrt(2.0),
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (fan_in, fan_out) weight for y = x @ w + b, drawn from N(0, std**2), std = gain / sqrt(fan).

    mode "fan_in" (fan = fan_in) keeps the forward activations' scale; "fan_out" (fan = fan_out)
    keeps the backward gradients' scale. gain=1 is the plain 1/sqrt(fan) scaling for a layer
    that no ReLU follows.
    """
    if mode == "fan_in":
        fan = fan_in
    elif mode == "fan_out":
        fan = fan_out
    else:
        raise ValueError(f"kaiming_normal: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    w = torch.randn(fan_in, fan_out, generator=generator, dtype=dtype)
    return w.mul_(gain / math.sqrt(fan))


class Module:
    """A layer: __call__ runs forward and remembers inputs and output; backward() runs bwd on them.

    Subclasses implement forward(*args) and bwd(out, *args); bwd reads out.g (the loss's gradient
    with respect to this layer's output) and sets arg.g on each input (and param.g on parameters).
    """

    def __call__(self, *args):
        # no_grad: the gradients are ours; autograd must not record a graph even if an input asks it to.
        with torch.no_grad():
            self.args = args
            self.out = self.forward(*args)
        return self.out

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self) -> None:
        with torch.no_grad():
            self.bwd(self.out, *self.args)

    def bwd(self, out, *args) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement bwd")


class Lin(Module):
    """Linear layer out = inp @ w + b, w of shape (n_in, n_out), b of shape (n_out,).

    init: "kaiming" (gain sqrt(2), for a layer a ReLU follows) or "linear" (gain 1, the plain
    1/sqrt(n_in) scaling, for the last layer, whose output no ReLU halves). The bias starts at 0.
    All three products (forward, and the gradients of the input and of w) run on `backend`: a name
    or "auto", or None (the default) for gemmlab's default backend at the time forward runs.
    """

    _GAINS = {"kaiming": relu_gain(), "linear": 1.0}

    def __init__(self, n_in: int, n_out: int, backend: str | None = None, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, init: str = "kaiming"):
        if init not in self._GAINS:
            raise ValueError(f"Lin: init must be one of {sorted(self._GAINS)}, got {init!r}")
        self.backend = backend
        self.w = kaiming_normal(n_in, n_out, gain=self._GAINS[init], generator=generator, dtype=dtype)
        self.b = torch.zeros(n_out, dtype=dtype)

    def forward(self, inp):
        # Resolved here and kept for bwd, so the backward products run where the forward one did
        # even when backward() is called outside the use_backend block (as autograd does for nn.Linear).
        self.ran_on = gemmlab.current_backend() if self.backend is None else self.backend
        return gemmlab.matmul(inp, self.w, backend=self.ran_on) + self.b

    def bwd(self, out, inp):
        inp.g = gemmlab.matmul(out.g, self.w.T, backend=self.ran_on)  # (N, n_out) @ (n_out, n_in)
        # dL/dw = inp.T @ out.g sums the per-example outer products inside the product itself,
        # instead of building the (N, n_in, n_out) tensor of them and summing it afterwards.
        self.w.g = gemmlab.matmul(inp.T, out.g, backend=self.ran_on)  # (n_in, N) @ (N, n_out)
        self.b.g = out.g.sum(0)

    def params(self) -> list[torch.Tensor]:
        return [self.w, self.b]

    def __repr__(self) -> str:
        return f"Lin({self.w.shape[0]}, {self.w.shape[1]}, backend={self.backend!r})"


class Relu(Module):
    """max(inp, 0); its gradient passes out.g through where inp > 0 and is 0 elsewhere."""

    def forward(self, inp):
        return inp.clamp_min(0.0)

    def bwd(self, out, inp):
        inp.g = (inp > 0).to(out.g.dtype) * out.g


class Mse(Module):
    """Mean squared error between a single output column inp (N, 1) and float targets targ (N,)."""

    def forward(self, inp, targ):
        return (inp.squeeze(-1) - targ).pow(2).mean()

    def bwd(self, out, inp, targ):
        # d/dinp of mean((inp - targ)**2); unsqueeze gives it back inp's (N, 1) shape.
        inp.g = 2 * (inp.squeeze(-1) - targ).unsqueeze(-1) / targ.shape[0]


class CrossEntropy(Module):
    """Softmax cross-entropy of logits inp (N, C) against int64 class indices targ (N,), batch mean."""

    @staticmethod
    def _log_softmax(inp):
        # log softmax = x - logsumexp(x); taking out the row max first keeps exp() from
        # overflowing (logits like 1000) without changing the result.
        m = inp.max(-1, keepdim=True).values
        return inp - (m + (inp - m).exp().sum(-1, keepdim=True).log())

    def forward(self, inp, targ):
        return -self._log_softmax(inp).gather(-1, targ.unsqueeze(-1)).mean()

    def bwd(self, out, inp, targ):
        # d/dinp of mean(-log softmax(inp)[targ]) = (softmax(inp) - one_hot(targ)) / N
        g = self._log_softmax(inp).exp()
        g[torch.arange(targ.shape[0]), targ] -= 1
        inp.g = g / targ.shape[0]


class Model:
    """Layers applied in order, then a loss; backward() fills .g on every parameter (and the input)."""

    def __init__(self, layers: list[Module], loss: Module):
        self.layers, self.loss = list(layers), loss

    def forward(self, x):
        """The layers' output (e.g. logits for accuracy). It replaces what backward() would use."""
        for layer in self.layers:
            x = layer(x)
        return x

    predict = forward

    def __call__(self, x, targ):
        """The loss of the batch (a 0-d tensor); call backward() next for the gradients."""
        return self.loss(self.forward(x), targ)

    def backward(self) -> None:
        # The loss seeds the last layer's out.g; each layer then hands inp.g to the one before.
        self.loss.backward()
        for layer in reversed(self.layers):
            layer.backward()

    def params(self) -> list[torch.Tensor]:
        """Every Lin's w and b, in layer order: update in place with p -= lr * p.g."""
        return [p for layer in self.layers if isinstance(layer, Lin) for p in layer.params()]


def mlp(n_in: int, n_hidden: int, n_out: int, backend: str | None = None, loss: str = "ce", seed: int = 0,
        dtype: torch.dtype = torch.float32) -> Model:
    """The notes' network: Lin(n_in, n_hidden) -> Relu -> Lin(n_hidden, n_out), then the loss.

    backend: for both layers, a name, "auto" or None (gemmlab's default when the model runs; see Lin).
    loss: "ce" (CrossEntropy, int64 class targets) or "mse" (Mse, float targets; n_out must be 1).
    The hidden layer gets Kaiming init (a ReLU follows it), the last layer plain 1/sqrt(n_hidden)
    scaling. Weights come from a torch.Generator seeded with `seed`: same seed, same model.
    """
    losses = {"ce": CrossEntropy, "mse": Mse}
    if loss not in losses:
        raise ValueError(f"mlp: loss must be 'ce' or 'mse', got {loss!r}")
    if loss == "mse" and n_out != 1:
        raise ValueError(f"mlp: the 'mse' loss takes a single output column, so n_out must be 1; got {n_out}")
    gen = torch.Generator().manual_seed(seed)
    layers = [
        Lin(n_in, n_hidden, backend=backend, generator=gen, dtype=dtype, init="kaiming"),
        Relu(),
        Lin(n_hidden, n_out, backend=backend, generator=gen, dtype=dtype, init="linear"),
    ]
    return Model(layers, losses[loss]())
