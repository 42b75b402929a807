"""The simulated clock and the arithmetic of a round: client times, deadlines, over-selection, energy, FedNova.

Pure functions over numpy arrays (one entry per client), so the rules can be checked by hand without Lightning.
Times are in seconds, work in FLOPs, payloads in bytes, bandwidths in bytes per second, energy in joules.

A client's round is download, then local training, then upload::

    download_seconds = downlink_bytes / downlink_bytes_per_second
    compute_seconds  = sum over its local steps of flops_per_sample * step_samples / flops_per_second
    upload_seconds   = uplink_bytes / uplink_bytes_per_second
    finish_seconds   = download_seconds + compute_seconds + upload_seconds
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_fl.exceptions import FederatedConfigError


def step_samples(size: int, batch_size: int, local_epochs: int, drop_last: bool = False) -> np.ndarray:
    """Samples in each local step of a client with ``size`` samples (the last batch of an epoch may be short, or
    dropped with ``drop_last``).

    Example:
        >>> step_samples(5, 2, 2).tolist(), step_samples(5, 2, 2, drop_last=True).tolist()
        ([2, 2, 1, 2, 2, 1], [2, 2, 2, 2])
    """
    full, rest = divmod(int(size), int(batch_size))
    epoch = [batch_size] * full + ([rest] if rest and not drop_last else [])
    return np.array(epoch * int(local_epochs), dtype=np.int64)


def transfer_seconds(nbytes: Any, bytes_per_second: Any) -> Any:
    """Seconds to move ``nbytes`` at ``bytes_per_second`` (scalars or arrays).

    Example:
        >>> transfer_seconds(1000.0, 500.0)
        2.0
    """
    return nbytes / bytes_per_second


def compute_seconds(flops: Any, flops_per_second: Any) -> Any:
    """Seconds to compute ``flops`` at ``flops_per_second`` (scalars or arrays)."""
    return flops / flops_per_second


def step_seconds(flops_per_sample: Any, step_samples: Any, flops_per_second: Any) -> Any:
    """Seconds of local steps of ``step_samples`` samples each: ``(flops_per_sample * step_samples) / speed``.

    The product comes first, as everywhere in the simulation, so that every path gives bit-identical times.

    Example:
        >>> step_seconds(2e6, np.array([2, 1]), 1e6).tolist()
        [4.0, 2.0]
    """
    return compute_seconds(flops_per_sample * step_samples, flops_per_second)


@dataclass(frozen=True)
class ClientTimes:
    """Simulated seconds of a client's round (scalars, or arrays aligned with the clients).

    Example:
        >>> t = client_times(np.array([1000.0]), np.array([500.0]), np.array([2e6]),
        ...                  np.array([1e3]), np.array([250.0]), np.array([1e6]))
        >>> t.download.tolist(), t.compute.tolist(), t.upload.tolist(), t.finish.tolist()
        ([1.0], [2.0], [2.0], [5.0])
    """

    download: Any
    compute: Any
    upload: Any

    @property
    def finish(self) -> Any:
        """When each client's update reaches the server, from the round's start (the only place this sum is
        written; scalars or arrays)."""
        return self.download + self.compute + self.upload


def client_times(
    downlink_bytes: np.ndarray,
    uplink_bytes: np.ndarray,
    train_flops: np.ndarray,
    downlink_bytes_per_second: np.ndarray,
    uplink_bytes_per_second: np.ndarray,
    flops_per_second: np.ndarray,
) -> ClientTimes:
    """Download, training and upload seconds of each client (bandwidths in bytes per second, not bits)."""
    return ClientTimes(
        download=transfer_seconds(np.asarray(downlink_bytes, dtype=np.float64), downlink_bytes_per_second),
        compute=compute_seconds(np.asarray(train_flops, dtype=np.float64), flops_per_second),
        upload=transfer_seconds(np.asarray(uplink_bytes, dtype=np.float64), uplink_bytes_per_second),
    )


def steps_within(budget_seconds: float, step_seconds: np.ndarray) -> int:
    """How many of a client's local steps (taken in order) fit in ``budget_seconds`` of training time.

    Example:
        >>> steps_within(2.5, np.array([1.0, 1.0, 1.0])), steps_within(-1.0, np.array([1.0]))
        (2, 0)
    """
    if budget_seconds < 0:
        return 0
    # a tiny relative tolerance, so that work planned to end exactly at the deadline is not lost to rounding
    return int(np.searchsorted(np.cumsum(step_seconds), budget_seconds * (1 + 1e-12), side="right"))


@dataclass(frozen=True)
class DeadlineOutcome:
    """Which clients of a round report, and how long the server waits for them.

    Attributes:
        kept: Mask of clients whose update the server uses.
        stragglers: Mask of clients that did not report by the deadline (they were still running).
        discarded: Mask of over-selected clients that finished after the first ``keep`` and were not used.
        round_seconds: Simulated duration of the round: the ``keep``-th finish when over-selection is met;
            otherwise the deadline if a straggler was still running at it, else the last finish or failure
            (a failure is noticed when it happens).
    """

    kept: np.ndarray
    stragglers: np.ndarray
    discarded: np.ndarray
    round_seconds: float


def apply_deadline(
    finish_seconds: np.ndarray,
    deadline: float | None,
    keep: int | None = None,
    failed: np.ndarray | None = None,
    failure_seconds: np.ndarray | None = None,
) -> DeadlineOutcome:
    """Apply a round deadline and over-selection to the clients' finish times.

    Args:
        finish_seconds: When each client would deliver its update.
        deadline: Seconds after which the server stops waiting (``None``: no deadline).
        keep: Keep only the first ``keep`` clients to finish (over-selection; ties go to the earlier position);
            ``None`` keeps all that make the deadline.
        failed: Mask of clients that fail during the round (they never report).
        failure_seconds: When each failed client fails (noticed at once: the connection drops).

    Example:
        >>> out = apply_deadline(np.array([3.0, 1.0, 9.0, 2.0]), deadline=5.0, keep=2)
        >>> out.kept.tolist(), out.stragglers.tolist(), out.discarded.tolist(), out.round_seconds
        ([False, True, False, True], [False, False, True, False], [True, False, False, False], 2.0)
    """
    finish = np.asarray(finish_seconds, dtype=np.float64)
    n = len(finish)
    failed = np.zeros(n, dtype=bool) if failed is None else np.asarray(failed, dtype=bool)
    on_time = ~failed if deadline is None else ~failed & (finish <= deadline)
    stragglers = ~failed & ~on_time
    kept = on_time.copy()
    discarded = np.zeros(n, dtype=bool)
    if keep is not None and int(on_time.sum()) > keep:
        order = np.flatnonzero(on_time)[np.argsort(finish[on_time], kind="stable")]
        kept[:] = False
        kept[order[:keep]] = True
        discarded[order[keep:]] = True
    if keep is not None and int(kept.sum()) >= keep and keep > 0:
        round_seconds = float(finish[kept].max())
    elif deadline is not None and stragglers.any():
        round_seconds = float(deadline)
    else:  # a failure is noticed when it happens (the connection drops)
        ends = list(finish[kept])
        if failure_seconds is not None and failed.any():
            ends += list(np.asarray(failure_seconds, dtype=np.float64)[failed])
        round_seconds = float(max(ends)) if ends else 0.0
    return DeadlineOutcome(kept, stragglers, discarded, round_seconds)


def energy_joules(flops: np.ndarray, bytes_moved: np.ndarray, joules_per_flop: np.ndarray,
                  joules_per_byte: np.ndarray) -> np.ndarray:
    """Energy of each client: its training FLOPs and the bytes it received and sent, at its device's costs.

    Example:
        >>> energy_joules(np.array([1e9]), np.array([1e6]), np.array([1e-9]), np.array([1e-6])).tolist()
        [2.0]
    """
    return np.asarray(flops, dtype=np.float64) * joules_per_flop + np.asarray(bytes_moved, np.float64) * joules_per_byte


def fednova_scales(local_steps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """FedNova (Wang et al. 2020) for SGD without momentum: the factor ``tau_eff / tau_i`` by which client ``i``'s
    update is multiplied before the weighted mean, so that the mean is ``tau_eff * sum_i p_i (update_i / tau_i)``
    with ``p_i = weights_i / sum(weights)`` and ``tau_eff = sum_i p_i tau_i``. Equal steps give factors of exactly 1.

    Example:
        >>> fednova_scales(np.array([2, 4]), np.array([1.0, 1.0])).tolist()
        [1.5, 0.75]
        >>> fednova_scales(np.array([3, 3]), np.array([5.0, 1.0])).tolist()
        [1.0, 1.0]
    """
    taus = np.asarray(local_steps, dtype=np.float64)
    if len(taus) == 0:
        return taus
    if np.any(taus <= 0):
        raise FederatedConfigError(f"local_steps must be >= 1 for every client, got {taus.tolist()}")
    if np.all(taus == taus[0]):
        return np.ones_like(taus)
    p = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    return float(np.sum(p * taus)) / taus
