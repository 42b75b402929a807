"""Central differential privacy for federated averaging: DP-FedAvg (McMahan et al. 2018)."""

from __future__ import annotations

import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_fl.checks import check_float, check_fraction, check_positive
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import ClientContext, FederatedAlgorithm, FederatedContext, RoundContext
from lightning_fl.federation.flat import TensorSpec
from lightning_fl.seeding import generator
from lightning_fl.server.aggregator import Aggregator, WeightedMeanAggregator
from lightning_fl.server.robust import NormClippingAggregator

#: Largest noise multiplier accepted.
MAX_NOISE_MULTIPLIER = 1e6


class DifferentialPrivacy(FederatedAlgorithm):
    """Client-level differential privacy with a trusted server (DP-FedAvg, McMahan et al. 2018).

    Each client's update is clipped to L2 norm ``clip_norm`` (over every averaged tensor: parameters and floating
    buffers), clients weigh equally, and the server adds Gaussian noise of standard deviation
    ``noise_multiplier * clip_norm`` to the sum of the clipped updates before dividing by the number of clients
    that reported. The noise is drawn from ``(seed, "dp", round_idx)``, identically on every rank, after the
    all-reduce. The privacy spent is tracked by Opacus's RDP accountant
    (:class:`opacus.accountants.RDPAccountant`) with sampling rate ``q = clients_per_round / num_clients`` (1 for
    ``client_sampling="all"``), one step per round, and logged as ``dp/epsilon`` at ``delta``.

    The accountant assumes Poisson sampling of clients; the data module samples a fixed number uniformly without
    replacement, the usual approximation (McMahan et al. 2018 use the same). Integer buffers (BatchNorm's
    ``num_batches_tracked``) are summed without noise: they reveal how many batches clients ran.

    Args:
        clip_norm: Largest L2 norm of a client's update, ``C > 0``.
        noise_multiplier: ``z`` in ``[0, 1e6]``; the noise on the sum has standard deviation ``z * C`` (0: clipping
            only, and epsilon is infinite).
        delta: The delta at which epsilon is reported, in (0, 1).

    Raises:
        FederatedConfigError: On an argument outside its range; at fit start, for ``aggregation="all"``, a robust
            aggregator, or size-proportional client sampling.

    Example:
        >>> DifferentialPrivacy(clip_norm=0.5, noise_multiplier=1.0, delta=1e-5).sample_rate is None
        True
    """

    order = 20
    # clipping, weights and noise act on each client's update and on the round's sum, never on a local step
    supports_cohorts = True

    def __init__(self, clip_norm: float = 1.0, noise_multiplier: float = 1.0, delta: float = 1e-5) -> None:
        super().__init__()
        self.clip_norm = check_positive("clip_norm", clip_norm)
        # 1e6 is far past any useful value (epsilon stops falling near z = 1e3); opacus overflows on z**2 near 1e154
        self.noise_multiplier = check_float("noise_multiplier", noise_multiplier, 0, MAX_NOISE_MULTIPLIER)
        self.delta = check_fraction("delta", delta, low_open=True, high_open=True)
        self.sample_rate: float | None = None
        self.epsilon = 0.0
        self.accountant = _rdp_accountant()
        self._freezable: list[tuple[TensorSpec, torch.Tensor]] = []

    @override
    def on_federated_fit_start(self, context: FederatedContext) -> None:
        super().on_federated_fit_start(context)
        dm = context.datamodule
        if context.aggregation != "selected":
            raise FederatedConfigError(
                f"DifferentialPrivacy needs FederatedAveraging(aggregation='selected'), got {context.aggregation!r}"
            )
        if type(context.aggregator) not in (WeightedMeanAggregator, NormClippingAggregator):
            raise FederatedConfigError(
                "DifferentialPrivacy adds noise to the sum of updates and needs a mean aggregator "
                f"(WeightedMeanAggregator), got {type(context.aggregator).__name__}"
            )
        if dm.client_sampling == "size":
            raise FederatedConfigError(
                "DifferentialPrivacy accounts for uniform client sampling: client_sampling must be 'uniform' or "
                "'all', got 'size'"
            )
        self.sample_rate = 1.0 if dm.client_sampling == "all" else dm.clients_per_round / dm.num_clients
        if context.state.int_numel:
            warnings.warn(
                "DifferentialPrivacy: the model has integer buffers (BatchNorm num_batches_tracked); their "
                "increments are summed without noise and reveal how many batches the clients ran",
                UserWarning,
                stacklevel=2,
            )
        local = [s for s in context.state.float_specs if s.name in context.local_names]
        self._noise_mask: torch.Tensor | None = None
        if local:  # personal tensors are not released: no noise on them
            mask = torch.ones(context.state.numel)
            for s in local:
                mask[s.offset : s.offset + s.numel] = 0
            self._noise_mask = mask.to(context.state.device)
        state = context.state
        self._freezable = [
            (spec, tensor) for spec, tensor in zip(state.float_specs, state.module_float, strict=True)
            if spec.is_parameter and spec.name not in state.extra_names and spec.name not in context.local_names
        ]

    @override
    @torch.no_grad()
    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        norm = float(torch.linalg.vector_norm(update))
        if norm > self.clip_norm:
            update.mul_(self.clip_norm / norm)

    @override
    def client_weight(self, client: ClientContext, weight: float) -> float:
        return 1.0

    @override
    @torch.no_grad()
    def on_round_synced(self, round_context: RoundContext, aggregator: Aggregator) -> None:
        if self.noise_multiplier == 0.0:
            return
        assert isinstance(aggregator, WeightedMeanAggregator)
        gen = generator(self.context.seed, "dp", round_context.round_idx)
        noise = torch.randn(aggregator.numel, generator=gen).to(aggregator.weighted_sum.device)
        if self._noise_mask is not None:
            noise.mul_(self._noise_mask)
        self._spare_frozen(noise, aggregator.weighted_sum)
        aggregator.weighted_sum.add_(noise, alpha=self.noise_multiplier * self.clip_norm)

    def _spare_frozen(self, noise: torch.Tensor, weighted_sum: torch.Tensor) -> None:
        """No noise on frozen parameters that no client changed (BackboneFinetuning before the unfreeze): their zero
        update depends on no client's data, and noise would drift weights that nothing trains."""
        for spec, tensor in self._freezable:
            part = slice(spec.offset, spec.offset + spec.numel)
            if not tensor.requires_grad and not bool(weighted_sum[part].any()):
                noise[part] = 0

    @override
    def on_round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> dict[str, float]:
        assert self.sample_rate is not None
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.epsilon = float(self.accountant.get_epsilon(delta=self.delta))
        return {"dp/epsilon": self.epsilon}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"accountant": self.accountant.state_dict(), "epsilon": self.epsilon}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.accountant.load_state_dict(state_dict["accountant"])
        self.epsilon = float(state_dict["epsilon"])


def _rdp_accountant() -> Any:
    try:
        from opacus.accountants import RDPAccountant
    except ImportError as error:  # pragma: no cover - opacus is a dependency
        raise FederatedConfigError("DifferentialPrivacy needs opacus (pip install opacus)") from error
    return RDPAccountant()
