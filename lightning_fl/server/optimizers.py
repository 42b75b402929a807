"""Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization").

The server treats the aggregated update ``delta`` as the negative of a pseudo-gradient. Plain FedAvg is
:class:`ServerSGD` with ``lr=1`` and no momentum (``w <- w + delta``). State lives in flat tensors covering the
trainable parameters only: floating buffers (BatchNorm statistics) are averaged but never enter an optimizer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from lightning_fl.checks import check_bool, check_float, check_positive
from lightning_fl.exceptions import FederatedConfigError


class ServerOptimizer(ABC):
    """Applies an aggregated update to the global parameters.

    Subclasses implement :meth:`_apply` on flat tensors; state tensors are registered in ``self.state`` so
    they are saved in checkpoints.
    """

    def __init__(self, lr: float) -> None:
        self.lr = check_positive("lr", lr)
        self.state: dict[str, torch.Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def step(self, weights: torch.Tensor, delta: torch.Tensor) -> None:
        """Update ``weights`` in place from the mean client update ``delta`` (same shape)."""
        self._apply(weights, delta)
        self.steps += 1

    @abstractmethod
    def _apply(self, weights: torch.Tensor, delta: torch.Tensor) -> None:
        """The update rule (abstract: each optimizer has its own)."""

    def _buffer(self, name: str, like: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        buf = self.state.get(name)
        if buf is None or buf.shape != like.shape or buf.device != like.device:
            buf = torch.full_like(like, fill)
            self.state[name] = buf
        return buf

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state on CPU, for checkpoints."""
        return {"steps": self.steps, "state": {k: v.detach().cpu() for k, v in self.state.items()}}

    def load_state_dict(self, state_dict: dict[str, Any], device: torch.device | None = None) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.steps = int(state_dict["steps"])
        self.state = {k: v.to(device) if device is not None else v for k, v in state_dict["state"].items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in ("state", "steps"))
        return f"{type(self).__name__}({args})"


class ServerSGD(ServerOptimizer):
    """FedAvg (``momentum=0``, ``lr=1``) and FedAvgM (server momentum).

    ``m <- momentum * m + delta``; ``w <- w + lr * m`` (or with Nesterov, ``w <- w + lr * (delta + momentum * m)``).

    Args:
        lr: Server learning rate (1.0 is plain FedAvg).
        momentum: Server momentum in [0, 1).
        nesterov: Use Nesterov momentum.

    Example:
        >>> w = torch.zeros(2); opt = ServerSGD(lr=1.0)
        >>> opt.step(w, torch.tensor([0.5, -1.0])); w.tolist()
        [0.5, -1.0]
    """

    def __init__(self, lr: float = 1.0, momentum: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(lr)
        self.momentum = check_float("momentum", momentum, 0, 1, high_open=True)
        self.nesterov = check_bool("nesterov", nesterov)
        if nesterov and self.momentum == 0.0:
            raise FederatedConfigError("nesterov=True needs momentum > 0, got momentum=0.0")

    def _apply(self, weights: torch.Tensor, delta: torch.Tensor) -> None:
        if self.momentum == 0.0:
            weights.add_(delta, alpha=self.lr)
            return
        m = self._buffer("momentum_buffer", weights)
        m.mul_(self.momentum).add_(delta)
        if self.nesterov:
            weights.add_(delta, alpha=self.lr).add_(m, alpha=self.lr * self.momentum)
        else:
            weights.add_(m, alpha=self.lr)


class _AdaptiveServerOptimizer(ServerOptimizer):
    """Common part of FedAdagrad, FedAdam and FedYogi (Reddi et al. 2021, Algorithm 2): first moment
    ``m <- beta1 m + (1 - beta1) delta``, a second moment ``v`` updated by :meth:`_second_moment`, and
    ``w <- w + lr * m / (sqrt(v) + tau)``. ``v`` starts at ``tau**2``; there is no bias correction."""

    def __init__(self, lr: float, beta1: float, beta2: float, tau: float) -> None:
        super().__init__(lr)
        self.beta1 = check_float("beta1", beta1, 0, 1, high_open=True)
        self.beta2 = check_float("beta2", beta2, 0, 1, high_open=True)
        self.tau = check_positive("tau", tau)

    def _apply(self, weights: torch.Tensor, delta: torch.Tensor) -> None:
        m = self._buffer("exp_avg", weights)
        v = self._buffer("exp_avg_sq", weights, fill=self.tau**2)
        m.mul_(self.beta1).add_(delta, alpha=1.0 - self.beta1)
        self._second_moment(v, delta * delta)
        weights.addcdiv_(m, v.sqrt().add_(self.tau), value=self.lr)

    @abstractmethod
    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> None:
        """Update ``v`` in place (abstract: the three methods differ only here)."""


class ServerAdagrad(_AdaptiveServerOptimizer):
    """FedAdagrad: ``v <- v + delta**2``.

    Example:
        >>> w = torch.zeros(1); ServerAdagrad(lr=0.1, beta1=0.0).step(w, torch.tensor([1.0])); round(w.item(), 4)
        0.0999
    """

    def __init__(self, lr: float = 0.1, beta1: float = 0.9, tau: float = 1e-3) -> None:
        super().__init__(lr, beta1, 0.0, tau)

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> None:
        v.add_(delta_sq)


class ServerAdam(_AdaptiveServerOptimizer):
    """FedAdam: ``v <- beta2 v + (1 - beta2) delta**2``."""

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(lr, beta1, beta2, tau)

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> None:
        v.mul_(self.beta2).add_(delta_sq, alpha=1.0 - self.beta2)


class ServerYogi(_AdaptiveServerOptimizer):
    """FedYogi: ``v <- v - (1 - beta2) delta**2 sign(v - delta**2)``."""

    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        super().__init__(lr, beta1, beta2, tau)

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> None:
        v.sub_(delta_sq * torch.sign(v - delta_sq), alpha=1.0 - self.beta2)
