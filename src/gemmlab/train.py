"""Training an MLP on digits (or MNIST) with the products on a chosen backend.

Two models, same architecture (in -> hidden -> ReLU -> out):
- "nn": gemmlab.nn layers trained with autograd and torch.optim.SGD;
- "scratch": the notes' hand-written network (gemmlab.scratch), gradients from its own backward
  pass and a plain SGD update written here.
Two losses: "ce" (log-softmax + NLL over 10 classes) and "mse", the notes' regression of the
label as a number from one output (a prediction counts as right when it rounds to the label).

Data-parallel: given a `gemmlab.distributed.Group` of N processes, each trains on its share of
every batch (the same shuffled order everywhere; batch_size is the whole batch) and
DistributedDataParallel averages the gradients, so N processes take the steps one process would.
Checkpoints (gemmlab.checkpoints) hold what a run needs to continue bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from gemmlab import checkpoints, data, distributed, nn, scratch
from gemmlab.checkpoints import CheckpointError


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
    """gemmlab.nn layers, autograd and torch.optim.SGD; in several processes, inside DDP."""

    def __init__(self, n_in: int, n_out: int, cfg: TrainConfig, world_size: int) -> None:
        torch.manual_seed(cfg.seed)
        self.net = nn.mlp([n_in, cfg.hidden, n_out], backend=cfg.backend)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        self.loss = cfg.loss
        self.world_size = world_size
        # DDP copies each gradient into its buckets, in the parameter's layout (it warns, and copies
        # slowly, if a gradient has another): gemmlab's backward gives every gradient its parameter's.
        self.run = DistributedDataParallel(self.net) if world_size > 1 else self.net

    def loss_of(self, output, target, reduction="mean"):
        if self.loss == "mse":
            return F.mse_loss(output.squeeze(-1), target.float(), reduction=reduction)
        return F.cross_entropy(output, target, reduction=reduction)

    def step(self, x, y, batch_size: int) -> float:
        """One SGD step on this process's share (x, y) of a batch of batch_size; the loss summed over x."""
        self.opt.zero_grad()
        output = self.run(x)
        if self.world_size == 1:
            loss = self.loss_of(output, y)
            loss.backward()
            summed = loss.item() * len(y)
        else:
            # DDP averages the processes' gradients. Scaling each one's summed loss by world_size /
            # batch_size makes that average the whole batch's mean gradient, also when the shares
            # differ in size (or one is empty) on a last, short batch.
            loss = self.loss_of(output, y, reduction="sum")
            (loss * (self.world_size / batch_size)).backward()
            summed = loss.item()
        self.opt.step()
        return summed

    def state(self) -> dict:
        return {"model": self.net.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])

    @torch.no_grad()
    def evaluate(self, x, y) -> tuple[float, torch.Tensor]:
        output = self.net(x)
        return self.loss_of(output, y).item(), output


class _ScratchModel:
    """The notes' hand-written network; SGD with momentum on the gradients its backward pass stores."""

    def __init__(self, n_in: int, n_out: int, cfg: TrainConfig, world_size: int) -> None:
        self.net = scratch.mlp(n_in, cfg.hidden, n_out, backend=cfg.backend, loss=cfg.loss, seed=cfg.seed)
        self.lr, self.momentum = cfg.lr, cfg.momentum
        self.velocity = [torch.zeros_like(p) for p in self.net.params()]
        self.float_target = cfg.loss == "mse"

    def _target(self, y):
        return y.float() if self.float_target else y

    def step(self, x, y, batch_size: int) -> float:
        """One SGD step on the batch (x, y) (one process: batch_size is len(x)); the loss summed over x."""
        loss = self.net(x, self._target(y))
        self.net.backward()
        for p, v in zip(self.net.params(), self.velocity):
            v.mul_(self.momentum).add_(p.g)
            p -= self.lr * v
        return float(loss) * len(y)

    def state(self) -> dict:
        return {"model": self.net.params(), "optimizer": self.velocity}

    def load_state(self, state: dict) -> None:
        for mine, saved in [(self.net.params(), state["model"]), (self.velocity, state["optimizer"])]:
            if [p.shape for p in mine] != [p.shape for p in saved]:  # copy_ would broadcast some
                raise ValueError(f"tensors of shapes {[tuple(p.shape) for p in saved]} in the checkpoint, "
                                 f"{[tuple(p.shape) for p in mine]} in this model")
            for p, value in zip(mine, saved):
                p.copy_(value)

    def evaluate(self, x, y) -> tuple[float, torch.Tensor]:
        loss = float(self.net(x, self._target(y)))
        return loss, self.net.forward(x)


MODELS = {"nn": _TorchModel, "scratch": _ScratchModel}


def check(cfg: TrainConfig, world_size: int = 1) -> None:
    """ValueError if `cfg` cannot train in `world_size` processes."""
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose from {', '.join(MODELS)}")
    if cfg.loss not in ("ce", "mse"):
        raise ValueError(f"unknown loss {cfg.loss!r}; choose 'ce' or 'mse'")
    if world_size > 1 and cfg.model != "nn":
        raise ValueError(f"the {cfg.model!r} model trains in one process only (DDP averages autograd's gradients; "
                         f"its hand-written backward has none): use model 'nn' in {world_size} processes")


def _settings(cfg: TrainConfig, ds: data.Dataset) -> dict:
    """What a checkpoint must share with the run that resumes it: every setting but the number of
    epochs (a resumed run may go on for more) and the data's path (the data itself is compared)."""
    settings = {key: value for key, value in asdict(cfg).items() if key not in ("epochs", "data")}
    settings["dataset"] = f"{ds.name}: {len(ds.y_train)} train, {len(ds.y_valid)} valid, {ds.n_features} features"
    return settings


def train(cfg: TrainConfig, on_step=None, on_epoch=None, checkpoint=None, resume=None,
          group: distributed.Group = distributed.SINGLE) -> History:
    """Train as configured; on_step(done, total) and on_epoch(Epoch) report progress.

    checkpoint: a file rewritten (atomically) at the end of every epoch. resume: a checkpoint to
    continue from, written with the same settings (CheckpointError otherwise): its epochs are not
    trained again, and the run ends as an uninterrupted one would. group: this process's place in a
    data-parallel run (gemmlab.distributed); only rank 0 evaluates, reports, writes the checkpoint
    and adds the new epochs to its History.
    """
    check(cfg, group.world_size)
    if checkpoint and group.is_main:
        checkpoints.check_target(checkpoint)
    ds = data.normalize(data.load_dataset(cfg.data))
    n_out = 1 if cfg.loss == "mse" else ds.n_classes
    model = MODELS[cfg.model](ds.x_train.shape[1], n_out, cfg, group.world_size)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    history = History(cfg, ds.name)
    settings, done = _settings(cfg, ds), 0
    if resume:  # read on rank 0, whose machine wrote it, and sent to the others
        state = distributed.from_main(lambda: checkpoints.load(resume, settings), group)
        try:
            model.load_state(state)
            shuffle.set_state(state["shuffle"])
            checkpoints.set_rng_states(state["rng"])
            history.epochs, done = [Epoch(**e) for e in state["history"]], state["epoch"]
        except (RuntimeError, ValueError, KeyError, TypeError) as e:  # an edited or damaged checkpoint
            raise CheckpointError(f"{resume}: its contents do not fit this run ({type(e).__name__}: {e})") from e
    n = ds.x_train.shape[0]
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    for epoch in range(done + 1, cfg.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)  # the same order in every process
        total = 0.0
        for step in range(steps):
            batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            mine = batch[group.rank::group.world_size]  # this process's share of the batch
            total += model.step(ds.x_train[mine], ds.y_train[mine], len(batch))
            if on_step:
                on_step((epoch - 1) * steps + step + 1, cfg.epochs * steps)
        total = distributed.all_sum(total, group)
        if not group.is_main:
            continue
        valid_loss, output = model.evaluate(ds.x_valid, ds.y_valid)
        result = Epoch(epoch, total / n, valid_loss, _accuracy(output, ds.y_valid, cfg.loss), time.perf_counter() - start)
        history.epochs.append(result)
        if checkpoint:
            checkpoints.save(checkpoint, {"settings": settings, "epoch": epoch, "history": [asdict(e) for e in history.epochs],
                                          **model.state(), "shuffle": shuffle.get_state(), "rng": checkpoints.rng_states()})
        if on_epoch:
            on_epoch(result)
    return history
