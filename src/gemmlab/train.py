"""Training an MLP on digits (or MNIST) with the products on a chosen backend.

Two models, same architecture (in -> hidden -> ReLU -> out):
- "nn": gemmlab.nn layers trained with autograd and torch.optim.SGD;
- "scratch": the notes' hand-written network (gemmlab.scratch), gradients from its own backward
  pass and a plain SGD update written here.
Two losses: "ce" (log-softmax + NLL over 10 classes) and "mse", the notes' regression of the
label as a number from one output (a prediction counts as right when it rounds to the label).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gemmlab import data, nn, scratch


@dataclass
class TrainConfig:
    backend: str | None = None  # None: gemmlab's default backend while train() runs (gemmlab.use_backend)
    model: str = "nn"  # "nn" or "scratch"
    loss: str = "ce"  # "ce" or "mse"
    epochs: int = 5
    hidden: int = 50
    lr: float = 0.1
    momentum: float = 0.9
    batch_size: int = 64
    seed: int = 0
    data: str | None = None  # None: scikit-learn's digits; a .pkl.gz file or an IDX folder: MNIST


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    valid_loss: float
    valid_accuracy: float
    seconds: float


@dataclass
class History:
    config: TrainConfig
    dataset: str
    epochs: list[Epoch] = field(default_factory=list)


def _accuracy(output: torch.Tensor, target: torch.Tensor, loss: str) -> float:
    if loss == "mse":  # one output: the label as a number
        predicted = output.squeeze(-1).round().clamp(0, 9).long()
    else:
        predicted = output.argmax(dim=-1)
    return (predicted == target).float().mean().item()


class _TorchModel:
    """gemmlab.nn layers, autograd and torch.optim.SGD."""

    def __init__(self, n_in: int, n_out: int, cfg: TrainConfig) -> None:
        torch.manual_seed(cfg.seed)
        self.net = nn.mlp([n_in, cfg.hidden, n_out], backend=cfg.backend)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        self.loss = cfg.loss

    def loss_of(self, output, target):
        return F.mse_loss(output.squeeze(-1), target.float()) if self.loss == "mse" else F.cross_entropy(output, target)

    def step(self, x, y) -> float:
        self.opt.zero_grad()
        loss = self.loss_of(self.net(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()

    @torch.no_grad()
    def evaluate(self, x, y) -> tuple[float, torch.Tensor]:
        output = self.net(x)
        return self.loss_of(output, y).item(), output


class _ScratchModel:
    """The notes' hand-written network; SGD with momentum on the gradients its backward pass stores."""

    def __init__(self, n_in: int, n_out: int, cfg: TrainConfig) -> None:
        self.net = scratch.mlp(n_in, cfg.hidden, n_out, backend=cfg.backend, loss=cfg.loss, seed=cfg.seed)
        self.lr, self.momentum = cfg.lr, cfg.momentum
        self.velocity = [torch.zeros_like(p) for p in self.net.params()]
        self.float_target = cfg.loss == "mse"

    def _target(self, y):
        return y.float() if self.float_target else y

    def step(self, x, y) -> float:
        loss = self.net(x, self._target(y))
        self.net.backward()
        for p, v in zip(self.net.params(), self.velocity):
            v.mul_(self.momentum).add_(p.g)
            p -= self.lr * v
        return float(loss)

    def evaluate(self, x, y) -> tuple[float, torch.Tensor]:
        loss = float(self.net(x, self._target(y)))
        return loss, self.net.forward(x)


MODELS = {"nn": _TorchModel, "scratch": _ScratchModel}


def train(cfg: TrainConfig, on_step=None, on_epoch=None) -> History:
    """Train as configured; on_step(done, total) and on_epoch(Epoch) report progress."""
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose from {', '.join(MODELS)}")
    if cfg.loss not in ("ce", "mse"):
        raise ValueError(f"unknown loss {cfg.loss!r}; choose 'ce' or 'mse'")
    ds = data.normalize(data.load_dataset(cfg.data))
    n_out = 1 if cfg.loss == "mse" else ds.n_classes
    model = MODELS[cfg.model](ds.x_train.shape[1], n_out, cfg)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    n = ds.x_train.shape[0]
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    history = History(cfg, ds.name)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        for step in range(steps):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            total += model.step(ds.x_train[idx], ds.y_train[idx]) * len(idx)
            if on_step:
                on_step((epoch - 1) * steps + step + 1, cfg.epochs * steps)
        valid_loss, output = model.evaluate(ds.x_valid, ds.y_valid)
        result = Epoch(epoch, total / n, valid_loss, _accuracy(output, ds.y_valid, cfg.loss), time.perf_counter() - start)
        history.epochs.append(result)
        if on_epoch:
            on_epoch(result)
    return history
