"""The x axis of what Lightning logs per batch: ``step = round_idx * stride + batch of the round``.

Per-round scalars (validation metrics, ``self.log(..., on_epoch=True)``, the ``fl/`` scalars) are logged at
``step = round_idx``. What Lightning logs per batch (``self.log(..., on_step=True)``, the default in
``training_step``; :class:`~pytorch_lightning.callbacks.LearningRateMonitor`; ``DeviceStatsMonitor``) is logged at
Lightning's count of batches that stepped, which the server callback restarts at ``round_idx * stride`` every round.
``stride`` is the smallest power of ten above the most batches a process can run in one round, so a per-step value
logged at step 3017 belongs to round 3 (``step // stride``), batch 17 of that process's round, and the axis reads
the same after a resume and on any number of devices.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytorch_lightning as pl

from lightning_fl.datamodules.federated import FederatedDataModule


def max_round_batches(dm: FederatedDataModule) -> int:
    """An upper bound of the batches one process runs in a round: the ``clients_per_round`` clients with the most
    batches (every client when the sampling is ``"all"`` or a participation hook decides who trains).

    Example:
        >>> import torch
        >>> from lightning_fl.datamodules import InMemoryDataset, IIDPartitioner
        >>> dm = FederatedDataModule(InMemoryDataset(torch.zeros(40, 2), torch.zeros(40, dtype=torch.long)),
        ...                          partitioner=IIDPartitioner(num_clients=4, seed=0), clients_per_round=2,
        ...                          batch_size=4)
        >>> dm.setup("fit"); max_round_batches(dm)
        6
    """
    sizes = np.asarray(dm.client_sizes, dtype=np.int64)  # num_client_batches over every client, in one pass
    work = np.sort(dm.local_epochs * -(-sizes // dm.batch_size))[::-1]
    if dm.client_sampling != "all" and dm.effective_plan_request().participation is None:
        work = work[: dm.clients_per_round]
    return max(int(work.sum()), 1)


def step_stride(max_batches: int) -> int:
    """The smallest power of ten greater than ``max_batches``.

    Example:
        >>> step_stride(9), step_stride(10), step_stride(250)
        (10, 100, 1000)
    """
    return 10 ** math.ceil(math.log10(max_batches + 1))


class RoundStepAxis:
    """Keeps Lightning's per-batch logging step on ``round_idx * stride + batch``; used by the server callback.

    Lightning's count of batches that stepped (``fit_loop.epoch_loop._batches_that_stepped``) serves only as the
    step of per-batch logs (the logger connector, ``LearningRateMonitor``, ``DeviceStatsMonitor`` read it); the
    optimizer step count ``trainer.global_step``, which schedulers, ``max_steps`` and checkpoints use, is untouched.

    Attributes:
        stride: Steps per round on the per-batch axis (1 until :meth:`bind`).
    """

    def __init__(self) -> None:
        self.stride = 1
        self._warned = False

    def bind(self, dm: FederatedDataModule) -> None:
        """Size the stride for the data module's rounds (at fit start, after its ``setup``)."""
        self.stride = step_stride(max_round_batches(dm))

    def start_round(self, trainer: "pl.Trainer", round_idx: int) -> None:
        """Put the per-batch step at the start of ``round_idx`` (at fit start, and at every round's start and end,
        so callbacks that log before or after the server callback's hooks see the same step)."""
        trainer.fit_loop.epoch_loop._batches_that_stepped = round_idx * self.stride

    def end_round(self, trainer: "pl.Trainer", round_idx: int) -> None:
        """Check the round fit in its stride, and move the step to the next round's start."""
        used = trainer.fit_loop.epoch_loop._batches_that_stepped - round_idx * self.stride
        if used >= self.stride and not self._warned:
            self._warned = True
            warnings.warn(
                f"round {round_idx} ran {used} batches on this process, more than the {self.stride} steps a round "
                "spans on the per-batch logging axis; per-step scalars of consecutive rounds overlap",
                RuntimeWarning,
                stacklevel=2,
            )
        self.start_round(trainer, round_idx + 1)
