"""The round's end: reduce the sums of all ranks, step the global model, record the round's statistics."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Literal

import pytorch_lightning as pl
import torch

from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.client_step import ClientSteps
from lightning_fl.federation.context import RoundContext
from lightning_fl.federation.cursor import RoundCursor
from lightning_fl.federation.exchange import ClientExchange
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.guards import GuardedServerStep
from lightning_fl.federation.layout import ClientLayout
from lightning_fl.federation.reduce import RoundReducer
from lightning_fl.federation.round_log import RoundStats
from lightning_fl.federation.schedulers import StepSchedules
from lightning_fl.server.aggregator import Aggregator

__all__ = ["RunTotals", "ServerStep"]


@dataclass
class RunTotals:
    """Totals over the fit (checkpointed by the server callback) and the rounds' logged metrics."""

    uplink_bytes_total: int = 0
    downlink_bytes_total: int = 0
    rejected_updates_total: int = 0
    rejected_rounds_total: int = 0
    rounds_completed: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class RunTotalsView:
    """The run's totals as read-only properties of the server callback (which holds them in ``totals``)."""

    totals: RunTotals

    @property
    def uplink_bytes_total(self) -> int:
        """Uplink bytes of all completed rounds (survives checkpoints)."""
        return self.totals.uplink_bytes_total

    @property
    def downlink_bytes_total(self) -> int:
        """Downlink bytes of all completed rounds (survives checkpoints)."""
        return self.totals.downlink_bytes_total

    @property
    def rejected_updates_total(self) -> int:
        """Client updates dropped as not finite, over the fit (survives checkpoints)."""
        return self.totals.rejected_updates_total

    @property
    def rejected_rounds_total(self) -> int:
        """Rounds whose server step the guard refused (survives checkpoints)."""
        return self.totals.rejected_rounds_total

    @property
    def rounds_completed(self) -> int:
        """Rounds completed, over resumes (survives checkpoints)."""
        return self.totals.rounds_completed

    @property
    def history(self) -> list[dict[str, float]]:
        """Each completed round's logged metrics, in order."""
        return self.totals.history


@dataclass
class _RoundSums:
    context: RoundContext
    int_increments: torch.Tensor
    down_bytes: int
    up_bytes: int
    rejected: int
    senders: int


class ServerStep:
    """Closes a round on every rank: one reduction, the guarded server step, statistics and algorithm hooks."""

    def __init__(self, cursor: RoundCursor, clients: ClientSteps, totals: RunTotals) -> None:
        self.cursor, self.clients, self.totals = cursor, clients, totals
        self._round_start_time = 0.0
        #: The round's one all-reduce; algorithms declare their sums in it (``FederatedContext.sum_state``).
        self.reducer = RoundReducer()

    def bind(self, state: FlatState, aggregator: Aggregator, algorithms: list[FederatedAlgorithm],
             dm: FederatedDataModule, aggregation: Literal["selected", "all"], guard: GuardedServerStep,
             layout: ClientLayout | None, schedules: StepSchedules | None, exchange: ClientExchange) -> None:
        """What a fit's round end needs, known at fit start."""
        self.state, self.aggregator, self.algorithms, self.dm = state, aggregator, algorithms, dm
        self.aggregation, self.guard, self.layout, self.schedules = aggregation, guard, layout, schedules
        self.exchange = exchange
        self.reducer.bind(aggregator, state.int_numel, state.device)

    def start_round(self) -> None:
        """Empty the round's sums and start its clock."""
        self.aggregator.reset()
        self.reducer.reset()
        self._round_start_time = time.perf_counter()

    @torch.no_grad()
    def finish(self, trainer: "pl.Trainer") -> None:
        """The round's last batch ran on this rank: reduce, step the global model, load it, log the round."""
        sums = self.reduce(trainer)
        refused = self.apply(sums)
        if self.layout is not None:
            self.layout.restore()
        if self.schedules:
            self.schedules.round_end()
        self.state.write_module()
        self.cursor.end_round()
        self.stats(trainer, sums, refused)

    def reduce(self, trainer: "pl.Trainer") -> _RoundSums:
        """Combine all ranks' sums and counters in one all-reduce; tell the algorithms (``on_round_synced``)."""
        tally = self.clients.tally
        int_increments, (down_bytes, up_bytes, rejected, senders) = self.reducer.reduce(
            (tally.downlink_bytes, tally.uplink_bytes, tally.rejected, tally.senders))
        plan = self.cursor.plan
        is_last = trainer.current_epoch == (trainer.max_epochs or 0) - 1
        round_context = RoundContext(plan.round_idx, plan.clients, self.aggregator.count, is_last,
                                     down_bytes, up_bytes, senders, rejected)
        for algorithm in self.algorithms:
            algorithm.on_round_synced(round_context, self.aggregator)
        return _RoundSums(round_context, int_increments, down_bytes, up_bytes, rejected, senders)

    def apply(self, sums: _RoundSums) -> bool:
        """The guarded server step on the round's mean update; returns whether the guard refused it."""
        round_idx = sums.context.round_idx
        if sums.context.reported == 0:
            warnings.warn(
                f"no client update reached the server in round {round_idx}; the global model is unchanged",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        denominator = float(self.dm.client_sizes.sum()) if self.aggregation == "all" else None
        increments = sums.int_increments.round().to(torch.int64).to(self.state.int_flat.device)
        reason = self.guard.step(self.aggregator.compute(denominator), increments)
        if reason is not None:
            self.guard.warn_refused(round_idx, reason)
        return reason is not None

    def stats(self, trainer: "pl.Trainer", sums: _RoundSums, refused: bool) -> None:
        """Update the fit's totals, ask the algorithms for their metrics and log the round."""
        totals = self.totals
        totals.uplink_bytes_total += sums.up_bytes
        totals.downlink_bytes_total += sums.down_bytes
        totals.rejected_updates_total += sums.rejected
        totals.rejected_rounds_total += int(refused)
        totals.rounds_completed += 1
        stats = RoundStats(
            round_idx=sums.context.round_idx,
            clients=sums.context.reported,
            uplink_bytes=sums.up_bytes,
            downlink_bytes=sums.down_bytes,
            uplink_bytes_total=totals.uplink_bytes_total,
            downlink_bytes_total=totals.downlink_bytes_total,
            downlink_dense_bytes=self.exchange.dense_bytes * len(sums.context.clients),
            uplink_dense_bytes=self.exchange.dense_bytes * sums.senders,
            rejected_updates=sums.rejected,
            rejected_rounds=int(refused),
            round_seconds=time.perf_counter() - self._round_start_time,
        )
        metrics = stats.metrics()
        context = dataclasses.replace(sums.context, refused=refused)
        for algorithm in self.algorithms:
            metrics.update(algorithm.on_round_end(trainer, context))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=stats.round_idx)
        totals.history.append(metrics)

