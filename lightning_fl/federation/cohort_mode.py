"""Whether a fit trains its clients vectorized, and how many at once (decided at fit start).

``vectorize=True`` checks the fit (:func:`~lightning_fl.federation.cohort_checks.check_vectorizable`) and refuses
what it cannot train. ``"auto"`` trains vectorized unless the fit is refused, the module has convolutions and runs on
a CPU (vmapped convolutions are slower there than a loop), or a trial step of two clients on a real batch fails under
``vmap``; it says which mode it picked and why.

Chunk size: ``max_parallel_clients`` when given; else, on a CPU, all of a rank's clients of the round; on a CUDA
device, what fits in 80% of the free memory (``torch.cuda.mem_get_info``) at a per-client cost measured at fit start:
the peak memory of a trial forward and backward pass of two clients, halved, plus three more copies of the model
(the optimizer's state and the client's start).
"""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lightning_fl.checks import check_int
from lightning_fl.datamodules.cohorts import CohortBatch, stacked_fetcher
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.cohort_checks import check_vectorizable, has_convolutions
from lightning_fl.federation.cohort_slots import Slots
from lightning_fl.federation.cohort_step import CohortTrainingStep
from lightning_fl.federation.flat import FlatState

__all__ = ["Vectorize", "check_vectorize", "choose_cohort_size", "cohort_size_for_memory", "decide_vectorized",
           "trial_step"]

Vectorize = bool | Literal["auto"]


def check_vectorize(vectorize: Vectorize, max_parallel_clients: int | None) -> tuple[Vectorize, int | None]:
    """The server callback's ``vectorize`` and ``max_parallel_clients`` arguments, checked.

    Raises:
        FederatedConfigError: ``vectorize`` is not ``True``, ``False`` or ``"auto"``, or ``max_parallel_clients`` is
            not ``None`` or a positive integer.

    Example:
        >>> check_vectorize("auto", None)
        ('auto', None)
    """
    if vectorize not in (True, False, "auto"):
        raise FederatedConfigError(f"vectorize must be True, False or 'auto', got {vectorize!r}")
    if max_parallel_clients is not None:
        check_int("max_parallel_clients", max_parallel_clients, low=1)
    return vectorize, max_parallel_clients


def decide_vectorized(vectorize: Vectorize, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                      algorithms: list[FederatedAlgorithm], state: FlatState, dm: FederatedDataModule) -> bool:
    """Whether this fit trains vectorized (``vectorize=True`` raises where it cannot; ``"auto"`` says what it
    picked).

    Raises:
        FederatedConfigError: ``vectorize=True`` and the fit cannot be vectorized.
    """
    if vectorize is False:
        return False
    if vectorize is True:
        check_vectorizable(trainer, pl_module, algorithms)
        return True
    try:
        check_vectorizable(trainer, pl_module, algorithms)
    except FederatedConfigError as err:
        rank_zero_info(f"vectorize='auto': training clients one after another ({err})")
        return False
    if state.device.type == "cpu" and has_convolutions(pl_module):
        rank_zero_info("vectorize='auto': training clients one after another (the module has convolutions, which "
                       "are slower vmapped than in a loop on a CPU)")
        return False
    try:
        trial_step(pl_module, state, dm)
    except FederatedRuntimeError as err:
        rank_zero_warn(f"vectorize='auto': training clients one after another: {err}")
        return False
    rank_zero_info("vectorize='auto': training each rank's clients of a round at once (vectorized)")
    return True


def trial_step(pl_module: "pl.LightningModule", state: FlatState, dm: FederatedDataModule) -> int:
    """Run the vectorized ``training_step`` forward and backward for two copies of the module on the first client's
    first batch (nothing of it is kept). Returns the peak bytes it allocated on a CUDA device (0 elsewhere).

    Raises:
        FederatedRuntimeError: The step cannot run under ``vmap``.
    """
    client = next(c for c, ix in enumerate(dm.client_indices) if len(ix))
    index = dm.client_indices[client][: dm.batch_size]
    assert dm.train_dataset is not None
    data = stacked_fetcher(dm.train_dataset, dm.collate_fn)([index, index])
    batch = CohortBatch((-1, -1), torch.ones(2, dtype=torch.bool), [(torch.arange(2), data)], 2 * len(index))
    batch = batch.to(state.device)
    cuda = state.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(state.device)
        torch.cuda.reset_peak_memory_stats(state.device)
    before = torch.cuda.memory_allocated(state.device) if cuda else 0
    slots = Slots(state, 2)
    for k in range(2):
        slots.take(k, None, None)
    step = CohortTrainingStep(pl_module, [s.name for s in state.float_specs], [s.name for s in state.int_specs],
                              lambda: (slots.floats, slots.ints))
    was_training = pl_module.training
    pl_module.train()
    try:
        total, _, _ = step.run(batch, 0)
        if total.requires_grad:
            total.backward()
    finally:
        pl_module.train(was_training)
    return int(torch.cuda.max_memory_allocated(state.device) - before) if cuda else 0


def choose_cohort_size(max_parallel_clients: int | None, pl_module: "pl.LightningModule", state: FlatState,
                       dm: FederatedDataModule) -> int:
    """The most clients a chunk holds (see the module docstring)."""
    if max_parallel_clients is not None:
        return max_parallel_clients
    if state.device.type != "cuda":
        return max(dm.num_clients, 1)
    peak = trial_step(pl_module, state, dm)
    free, _ = torch.cuda.mem_get_info(state.device)
    size, per_client = cohort_size_for_memory(free, peak, state.numel * state.flat.element_size(), dm.num_clients)
    rank_zero_info(f"vectorize: up to {size} clients at once (about {per_client / 2**20:.1f} MiB per client, "
                   f"{free / 2**30:.1f} GiB free)")
    return size


def cohort_size_for_memory(free: int, trial_peak: int, model_bytes: int, num_clients: int) -> tuple[int, int]:
    """Clients per chunk that fit in 80% of ``free`` bytes, and the per-client bytes: half the peak of a two-client
    trial step plus three model copies (optimizer state, start), at least 1 and at most ``num_clients``.

    Example:
        >>> cohort_size_for_memory(free=1000, trial_peak=100, model_bytes=10, num_clients=100)
        (10, 80)
        >>> cohort_size_for_memory(free=10, trial_peak=100, model_bytes=10, num_clients=100)[0]
        1
    """
    per_client = max(trial_peak // 2 + 3 * model_bytes, 1)
    return max(1, min(num_clients, int(0.8 * free) // per_client)), per_client
