"""One client's turn in a round: its start (download, seeding, algorithms) and its end (update, upload, sum)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.client_seed import seed_client
from lightning_fl.federation.context import ClientContext
from lightning_fl.federation.cursor import RoundCursor
from lightning_fl.federation.exchange import ClientExchange
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.optimizer_state import reset_state
from lightning_fl.federation.reduce import RoundReducer
from lightning_fl.seeding import derive_seed
from lightning_fl.server.aggregator import Aggregator

__all__ = ["ClientSteps", "RoundTally"]


@dataclass
class RoundTally:
    """This rank's counts of the current round."""

    downlink_bytes: int = 0
    uplink_bytes: int = 0
    rejected: int = 0
    senders: int = 0


class ClientSteps:
    """Starts and finishes the clients of a round on this rank (bound to the fit's state at fit start)."""

    def __init__(self, cursor: RoundCursor) -> None:
        self.cursor = cursor
        self.tally = RoundTally()
        self._warned_nonfinite = False

    def bind(self, state: FlatState, exchange: ClientExchange, algorithms: list[FederatedAlgorithm],
             client_sizes: np.ndarray, seed: int, aggregator: Aggregator, reducer: RoundReducer) -> None:
        """What a fit's clients need, known at fit start; ``reducer`` sums the clients' integer-buffer
        increments."""
        self.state, self.exchange, self.algorithms = state, exchange, algorithms
        self.client_sizes, self.seed, self.aggregator, self.reducer = client_sizes, seed, aggregator, reducer
        #: Positions (among the float tensors) of the trainable parameters, for the clients' contexts.
        self._param_positions = [i for i, spec in enumerate(state.float_specs) if spec.is_parameter]

    def start_round(self) -> None:
        """Zero this rank's counts of the round."""
        self.tally = RoundTally()

    @torch.no_grad()
    def start(self, trainer: "pl.Trainer", client_id: int) -> None:
        """Load the client's starting weights into the module, clear the optimizers and seed the client."""
        state = self.state
        self.cursor.enter_client(client_id, None)
        round_idx = self.cursor.plan.round_idx
        older = next((w for a in self.algorithms if (w := a.client_start_weights(round_idx, client_id)) is not None),
                     None)  # an older model version this client downloaded (asynchronous training)
        self.tally.downlink_bytes += self.exchange.download(round_idx, client_id, older)
        for optimizer in trainer.optimizers:
            reset_state(optimizer)
        seed_client(derive_seed(self.seed, "client", round_idx, client_id), state.device)
        if self.algorithms:
            client = self._context(round_idx, client_id)
            self.cursor.enter_client(client_id, client)
            for algorithm in self.algorithms:
                algorithm.on_client_start(client)
            self.exchange.keep_local_start()

    def _context(self, round_idx: int, client_id: int) -> ClientContext:
        """The client's context, once its starting weights are in the module."""
        plan, state, starts = self.cursor.plan, self.state, self.exchange.start_views
        return ClientContext(
            round_idx=round_idx,
            client_id=client_id,
            num_samples=int(self.client_sizes[client_id]),
            num_batches=plan.client_num_batches[client_id],
            params=[state.module_float[i] for i in self._param_positions],
            start_weights=[starts[i] for i in self._param_positions],
        )

    @torch.no_grad()
    def finish(self, client_id: int) -> None:
        """Send the client's update through the uplink and add it, weighted, to the round's sum (its integer-buffer
        increments unweighted, to the reducer's)."""
        exchange = self.exchange
        delta, views = exchange.update()
        # One reduction instead of an elementwise isfinite (100x cheaper): NaN and Inf entries make the sum
        # non-finite; so would finite entries whose sum overflows float32, which no sane update has.
        if not bool(torch.isfinite(delta.sum())):  # the client's own check, before algorithms read the update
            self._reject(client_id)
            return
        weight = float(self.client_sizes[client_id])
        client = self.cursor.client
        if client is not None:  # algorithms are present
            for algorithm in self.algorithms:
                algorithm.on_client_update(client, delta, views)
            for algorithm in self.algorithms:
                weight = algorithm.client_weight(client, weight)
        nbytes, update, coverage = exchange.upload(self.cursor.plan.round_idx, client_id,
                                                   changed=client is not None)
        self.tally.uplink_bytes += nbytes
        self.tally.senders += 1
        if update is None:
            self._reject(client_id)
            return
        self.aggregator.update(update, weight, coverage=coverage)
        self.reducer.add_int_increments(exchange.int_increments())
        self.cursor.leave_client()

    def _reject(self, client_id: int) -> None:
        self.tally.rejected += 1
        self.cursor.leave_client()
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"client {client_id}'s update in round {self.cursor.plan.round_idx} is not finite (it contains NaN "
                "or Inf, or is too large to sum in float32) and was dropped from the average; further rejections are "
                "counted in fl/rejected_updates without a warning",
                RuntimeWarning,
                stacklevel=2,
            )
