"""The columns of ``benchmarks/cohort_speed.py``: one FedAvg round of K clients trained four ways on identical work.

- :func:`plain_loop`: plain torch, client after client (load the global weights, fresh SGD, run the client's batches,
  accumulate its update weighted by its sample count, average), as ``benchmarks/round_overhead.py`` writes it.
- :func:`lightning_fl_column`: an unmodified ``ClassifierModule`` in a plain ``pl.Trainer`` with
  ``FederatedAveraging()`` (sequential) or ``FederatedAveraging(vectorize=True)`` (vectorized).
- :func:`vmap_reference`: plain torch with ``torch.func``: ``vmap(grad(loss))`` over the stacked weights of the
  clients, ``functional_call``, plain SGD; the ceiling the vectorized mode aims at.

Every column runs round 0 as a warm-up and then ``rounds`` timed rounds. A round's time is the wall time from the end
of the previous round to the end of this one (the device synchronized at both ends), so it includes everything the
column does between rounds (sampling and planning the clients, Lightning's epoch hooks). Peak memory is the growth
above what was in use when the column started: ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak
resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import inspect
import itertools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from lightning_fl import ClassifierModule, FederatedAveraging, FederatedDataModule
from lightning_fl.datamodules.plan import client_batches, sample_clients

Precision = Literal["32", "bf16-mixed"]


@dataclass
class ColumnResult:
    """What one column measured.

    Attributes:
        round_ms: Wall time of every timed round, in milliseconds.
        peak_mib: Peak memory growth over the column's start, in MiB (``None`` where it cannot be measured).
        weights: The final global weights, in the backbone's parameter order.
        first_weights: The global weights after round 0 (before float32 rounding differences are amplified by
            training: they grow about tenfold a round for the CNN).
        status: ``"ok"``, ``"n/a"`` (the installed lightning-fl has no such mode) or ``"error"``.
        note: Why a column is ``n/a`` or what error it raised.
    """

    round_ms: list[float] = field(default_factory=list)
    peak_mib: float | None = None
    weights: list[torch.Tensor] | None = None
    first_weights: list[torch.Tensor] | None = None
    status: str = "ok"
    note: str = ""

    @property
    def median_ms(self) -> float | None:
        """Median milliseconds per timed round, ``None`` when the column did not run."""
        return float(np.median(self.round_ms)) if self.round_ms else None


class Clock:
    """``now()`` in seconds, after waiting for the device's queued work (so a GPU round is timed when it is done)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _proc_status(key: str) -> int:
    """A ``/proc/self/status`` field in KiB."""
    with open("/proc/self/status") as f:
        match = re.search(rf"^{key}:\s+(\d+)", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"no {key} in /proc/self/status")
    return int(match.group(1))


class PeakMemory:
    """Peak memory growth of a block, in MiB: CUDA allocations on a GPU, the resident set on the CPU.

    On the CPU, freed heap memory is first returned to the system (``malloc_trim``) and the peak resident set is reset
    (writing ``5`` to ``/proc/self/clear_refs``, Linux >= 4.0); ``mib`` stays ``None`` where that is impossible.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: float | None = None
        self._base = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._base = _proc_status("VmRSS")
        except OSError:
            self._base = -1
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base >= 0:
            self.mib = (_proc_status("VmHWM") - self._base) / 2**10


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context that Lightning's ``bf16-mixed`` puts around ``training_step``; nothing for ``32``."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _round_clients(dm: FederatedDataModule, round_idx: int) -> np.ndarray:
    return sample_clients(round_idx, dm.client_sizes, dm.clients_per_round, dm.client_sampling, dm.seed)


def _batches(dm: FederatedDataModule, round_idx: int, client: int) -> list[np.ndarray]:
    return client_batches(
        dm.client_indices[client], dm.batch_size, dm.local_epochs, dm.shuffle, dm.seed, round_idx, client
    )


def _round_indices(
    dm: FederatedDataModule, round_idx: int, clients: np.ndarray, device: torch.device
) -> list[tuple[torch.Tensor, ...]]:
    """Every client's batches of the round as index tensors on ``device``, copied there at once (a GPU then never
    waits for a copy inside the round)."""
    per_client = [_batches(dm, round_idx, int(c)) for c in clients]
    flat = [b for batches in per_client for b in batches]
    index = torch.from_numpy(np.concatenate(flat)).to(device).split([len(b) for b in flat])
    starts = np.cumsum([0] + [len(batches) for batches in per_client])
    return [index[a:b] for a, b in itertools.pairwise(starts)]


def _round_times(ends: list[float]) -> list[float]:
    """Milliseconds of rounds 1.. from the end times of rounds 0.. (round 0 is the warm-up)."""
    return [(b - a) * 1000 for a, b in itertools.pairwise(ends)]


def plain_loop(
    backbone: nn.Module, dm: FederatedDataModule, rounds: int, device: torch.device, precision: str, lr: float
) -> ColumnResult:
    """FedAvg as one writes it by hand: per client, load the global weights, a fresh SGD, its batches (the round's
    sample indices copied to the device at once); then the update weighted by the client's sample count is
    accumulated, and the mean update applied."""
    result, clock = ColumnResult(), Clock(device)
    with PeakMemory(device) as memory:
        model = copy.deepcopy(backbone).to(device)
        x, y = dm.train_dataset.tensors  # type: ignore[union-attr]
        sizes = dm.client_sizes
        params = list(model.parameters())
        global_w = [p.detach().clone() for p in params]
        ends = []
        for round_idx in range(rounds + 1):
            acc = [torch.zeros_like(w) for w in global_w]
            total = 0.0
            clients = _round_clients(dm, round_idx)
            for c, indices in zip(clients, _round_indices(dm, round_idx, clients, device), strict=True):
                with torch.no_grad():
                    for p, w in zip(params, global_w, strict=True):
                        p.copy_(w)
                opt = torch.optim.SGD(params, lr=lr)
                for index in indices:
                    opt.zero_grad()
                    with autocast(device, precision):
                        loss = F.cross_entropy(model(x[index]), y[index])
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    for a, p, w in zip(acc, params, global_w, strict=True):
                        a.add_(p - w, alpha=float(sizes[c]))
                total += float(sizes[c])
            with torch.no_grad():
                for w, a in zip(global_w, acc, strict=True):
                    w.add_(a / total)
            if round_idx == 0:
                result.first_weights = [w.clone() for w in global_w]
            ends.append(clock.now())
    result.round_ms, result.peak_mib, result.weights = _round_times(ends), memory.mib, global_w
    return result


def _chunks(clients: np.ndarray, size: int | None) -> Iterator[np.ndarray]:
    step = len(clients) if size is None else size
    for start in range(0, len(clients), step):
        yield clients[start : start + step]


def _vmap_step(model: nn.Module, device: torch.device, precision: str) -> Callable[..., dict[str, torch.Tensor]]:
    """``vmap(grad(loss))``: every client's gradient from its own slice of the stacked weights and its own batch."""
    buffers = dict(model.named_buffers())

    def loss(params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return F.cross_entropy(functional_call(model, (params, buffers), (xb,)), yb)

    return vmap(grad(loss))  # type: ignore[no-any-return]


def _vmap_chunk(
    step: Callable[..., dict[str, torch.Tensor]], global_w: dict[str, torch.Tensor], batches: torch.Tensor,
    weights: torch.Tensor, data: tuple[torch.Tensor, torch.Tensor], lr: float,
) -> dict[str, torch.Tensor]:
    """Train a chunk of clients (``batches``: ``[clients, steps, batch]`` sample indices) from the global weights;
    return the sum of their updates weighted by ``weights``."""
    k = batches.shape[0]
    stacked = {n: w.unsqueeze(0).expand(k, *w.shape).clone() for n, w in global_w.items()}
    x, y = data
    for s in range(batches.shape[1]):
        index = batches[:, s]
        grads = step(stacked, x[index], y[index])
        for n, g in grads.items():
            stacked[n].sub_(g, alpha=lr)
    return {
        n: ((stacked[n] - w) * weights.view(k, *([1] * w.dim()))).sum(0) for n, w in global_w.items()
    }


def vmap_reference(
    backbone: nn.Module, dm: FederatedDataModule, rounds: int, device: torch.device, precision: str, lr: float,
    max_parallel_clients: int | None = None,
) -> ColumnResult:
    """The same rounds with ``torch.func``: each chunk of at most ``max_parallel_clients`` clients (all at once for
    ``None``) trains as one computation over its stacked weights. Needs equal step counts and batch sizes."""
    sizes = dm.client_sizes
    if len(set(sizes.tolist())) > 1 or sizes[0] % dm.batch_size:
        return ColumnResult(status="n/a", note="the vmap reference needs clients of one size, a multiple of the batch")
    result, clock = ColumnResult(), Clock(device)
    with PeakMemory(device) as memory:
        model = copy.deepcopy(backbone).to(device)
        data: tuple[torch.Tensor, torch.Tensor] = dm.train_dataset.tensors  # type: ignore[union-attr,assignment]
        global_w = {n: p.detach().clone() for n, p in model.named_parameters()}
        step = _vmap_step(model, device, precision)
        ends = []
        for round_idx in range(rounds + 1):
            clients = _round_clients(dm, round_idx)
            acc = {n: torch.zeros_like(w) for n, w in global_w.items()}
            for chunk in _chunks(clients, max_parallel_clients):
                index = np.stack([np.stack(_batches(dm, round_idx, int(c))) for c in chunk])
                weights = torch.as_tensor(dm.client_sizes[chunk], dtype=torch.float32, device=device)
                batches = torch.from_numpy(index).to(device)
                for n, s in _vmap_chunk(step, global_w, batches, weights, data, lr).items():
                    acc[n].add_(s)
            total = float(dm.client_sizes[clients].sum())
            for n, w in global_w.items():
                w.add_(acc[n] / total)
            if round_idx == 0:
                result.first_weights = [w.clone() for w in global_w.values()]
            ends.append(clock.now())
    result.round_ms, result.peak_mib, result.weights = _round_times(ends), memory.mib, list(global_w.values())
    return result


class _RoundEnds(pl.Callback):
    """Records the (synchronized) time at the end of every round, and the global weights after round 0; placed
    after the server callback, which has loaded the new global model into the module by then."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ends: list[float] = []
        self.first_weights: list[torch.Tensor] | None = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            assert isinstance(pl_module, ClassifierModule)
            self.first_weights = [p.detach().clone() for p in pl_module.backbone.parameters()]
        self.ends.append(self.clock.now())


def vectorize_supported() -> bool:
    """Whether the installed ``FederatedAveraging`` has the vectorized mode (a ``vectorize`` argument)."""
    return "vectorize" in inspect.signature(FederatedAveraging.__init__).parameters


def lightning_fl_column(
    backbone: nn.Module, make_dm: Callable[[], FederatedDataModule], rounds: int, device: torch.device,
    precision: Precision, lr: float, vectorize: bool = False, max_parallel_clients: int | None = None,
) -> ColumnResult:
    """An unmodified ``ClassifierModule`` (SGD, ``lr``) in a plain ``pl.Trainer`` with ``FederatedAveraging()``, or
    ``FederatedAveraging(vectorize=True[, max_parallel_clients=N])``: no validation, logging or checkpoints."""
    if vectorize and not vectorize_supported():
        return ColumnResult(status="n/a", note="FederatedAveraging has no `vectorize` argument in this lightning-fl")
    kwargs: dict[str, Any] = {}
    if vectorize:
        kwargs["vectorize"] = True
        if max_parallel_clients is not None:
            kwargs["max_parallel_clients"] = max_parallel_clients
    clock = Clock(device)
    timer = _RoundEnds(clock)
    with PeakMemory(device) as memory:
        module = ClassifierModule(backbone=copy.deepcopy(backbone), lr=lr, log_train_loss=False)
        trainer = pl.Trainer(
            max_epochs=rounds + 1, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
            precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=[FederatedAveraging(**kwargs), timer],
        )
        trainer.fit(module, datamodule=make_dm())
        weights = [p.detach().clone() for p in module.backbone.parameters()]
    return ColumnResult(
        round_ms=_round_times(timer.ends), peak_mib=memory.mib, weights=weights, first_weights=timer.first_weights
    )


def max_abs_diff(a: list[torch.Tensor] | None, b: list[torch.Tensor] | None) -> float | None:
    """Largest absolute difference between two lists of weights (``None`` if either is missing)."""
    if a is None or b is None:
        return None
    return max(float((u.float() - v.float()).abs().max()) for u, v in zip(a, b, strict=True))
