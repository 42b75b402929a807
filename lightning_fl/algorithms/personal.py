"""Personal layers: modules that stay on each client (FedPer / FedRep style) and FedBN (BatchNorm stays local)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pytorch_lightning as pl
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from typing_extensions import override

from lightning_fl.checks import check_strings
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import ClientContext, FederatedAlgorithm, FederatedContext
from lightning_fl.federation.client_store import ClientStore
from lightning_fl.federation.flat import FlatState


class _LocalModules(FederatedAlgorithm, ABC):
    """Keeps some modules' parameters and buffers on the clients; subclasses say which modules."""

    keeps_client_state = True
    # All client work is per client: on_client_start writes the client's own tensors into the module (the runtime
    # stacks the module as each client starts) and on_client_update reads them back (the runtime writes the client's
    # slot into the module first); nothing acts on a local step.
    supports_cohorts = True

    def __init__(self, max_clients: int | None = None) -> None:
        super().__init__()
        self.client_tensors: ClientStore[list[torch.Tensor]] = ClientStore(max_clients)
        self._names: list[str] = []
        self._tensors: list[torch.Tensor] = []

    @abstractmethod
    def _module_names(self, pl_module: "pl.LightningModule") -> list[str]:
        """Names of the modules whose tensors stay on the clients (each subclass has its own rule)."""

    @override
    def local_tensor_names(self, pl_module: "pl.LightningModule", state: FlatState) -> set[str]:
        modules = self._module_names(pl_module)
        prefixes = tuple(f"{m}." for m in modules)
        specs = state.float_specs + state.int_specs
        self._names = [s.name for s in specs if s.name.startswith(prefixes)]
        if not self._names:
            raise FederatedConfigError(
                f"modules must hold a trainable parameter or a persistent buffer, got {modules} with none"
            )
        return set(self._names)

    @override
    def on_federated_fit_start(self, context: FederatedContext) -> None:
        super().on_federated_fit_start(context)
        state = context.state
        local = set(self._names)
        self._tensors = [t for s, t in zip(state.float_specs, state.module_float, strict=True) if s.name in local]
        self._tensors += [t for s, t in zip(state.int_specs, state.module_int, strict=True) if s.name in local]
        shapes = [t.shape for t in self._tensors]
        for client_id, stored in self.client_tensors.items():
            got = [tuple(t.shape) for t in stored]
            if got != [tuple(s) for s in shapes]:
                raise FederatedConfigError(
                    f"the checkpoint's personal tensors of client {client_id} must have the shapes of the model's "
                    f"local tensors {[tuple(s) for s in shapes]}, got {got}"
                )
        if context.world_size > 1:
            self.client_tensors.keep_owned(context.rank, context.world_size)

    @override
    @torch.no_grad()
    def load_client_tensors(self, client_id: int) -> None:
        stored = self.client_tensors.peek(client_id)
        if stored is not None:
            torch._foreach_copy_(self._tensors, stored)

    @override
    @torch.no_grad()
    def on_client_start(self, client: ClientContext) -> None:
        stored = self.client_tensors.get(client.client_id)  # marks the client as recently used
        if stored is not None:
            torch._foreach_copy_(self._tensors, stored)

    @override
    @torch.no_grad()
    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        self.client_tensors.put(client.client_id, [t.detach().to("cpu", copy=True) for t in self._tensors])

    @property
    def bytes_per_client(self) -> int:
        """CPU bytes one client's personal copy takes."""
        return sum(t.numel() * t.element_size() for t in self._tensors)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"client_tensors": self.client_tensors.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.client_tensors.load_state_dict(state_dict["client_tensors"])


class PersonalLayers(_LocalModules):
    """Keeps the named modules on the clients: their parameters and buffers are never sent (either way), never
    averaged and never counted in the bytes; every client trains its own copy, which persists across rounds.

    FedPer (Arivazhagan et al. 2019) keeps the classifier head local; FedRep (Collins et al. 2021) does too (its
    alternating head/body schedule is not reproduced here: head and body train together). A client trained for
    the first time starts from the initial weights of the personal modules, which the global model keeps
    unchanged (so the global model's ``val/acc`` is that of an untrained head: evaluate with
    :class:`PersonalizedEvaluation`).

    Memory: each client's copy of the personal tensors on CPU (their float and integer bytes, see
    :attr:`bytes_per_client`) in a :class:`~lightning_fl.federation.client_store.ClientStore` that ``max_clients``
    bounds per process; with several processes clients are pinned to ranks and checkpoints merge by owner.

    Args:
        modules: Names of the modules that stay local, as in ``pl_module.named_modules()`` (e.g.
            ``["backbone.9"]`` for the last layer of a :class:`~lightning_fl.nn.SmallCNN` backbone); one string is one
            name.
        max_clients: Keep the personal copies of at most this many clients per process (``None``: all).

    Raises:
        FederatedConfigError: If ``modules`` is empty or not a name or a list of names.

    Example:
        >>> PersonalLayers(modules=["backbone.9"]).modules
        ['backbone.9']
    """

    def __init__(self, modules: str | list[str], max_clients: int | None = None) -> None:
        super().__init__(max_clients)
        self.modules = list(check_strings("modules", modules, allow_empty=False))

    @override
    def _module_names(self, pl_module: "pl.LightningModule") -> list[str]:
        available = dict(pl_module.named_modules())
        missing = [m for m in self.modules if m not in available]
        if missing:
            names = [n for n in available if n][:20]
            raise FederatedConfigError(
                f"modules must name modules of the LightningModule (some of {names}), got unknown {missing}"
            )
        return self.modules


class FedBN(_LocalModules):
    """FedBN (Li et al. 2021): every BatchNorm layer's affine parameters and running statistics stay on the client;
    the rest is averaged. Like :class:`PersonalLayers` over all ``BatchNorm1d/2d/3d`` modules of the model.

    Args:
        max_clients: Keep the BatchNorm tensors of at most this many clients per process (``None``: all).

    Example:
        >>> FedBN(max_clients=10).client_tensors.max_clients
        10
    """

    def __init__(self, max_clients: int | None = None) -> None:
        super().__init__(max_clients)
        self.modules: list[str] = []

    @override
    def _module_names(self, pl_module: "pl.LightningModule") -> list[str]:
        self.modules = [name for name, m in pl_module.named_modules() if isinstance(m, _BatchNorm)]
        if not self.modules:
            raise FederatedConfigError("FedBN needs BatchNorm layers in the model, got none")
        return self.modules
