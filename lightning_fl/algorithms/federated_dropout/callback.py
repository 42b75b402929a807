"""Federated Dropout (Caldas et al. 2018): every client trains a genuinely smaller dense submodel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from typing_extensions import override

from lightning_fl.algorithms.federated_dropout.groups import DropoutGroup, find_dropout_groups
from lightning_fl.algorithms.federated_dropout.layout import ClientSubmodels, Per
from lightning_fl.algorithms.federated_dropout.submodel import SubmodelPlan, module_tensors
from lightning_fl.checks import check_choice, check_fraction
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import FederatedAlgorithm, RoundContext
from lightning_fl.federation.flat import FlatState


class FederatedDropout(FederatedAlgorithm):
    """Each client receives, trains and returns a submodel keeping a fraction ``keep`` of the hidden units of every
    fully connected layer and of the filters of every convolution (never the model's inputs or outputs).

    How it works, with the Trainer:

    - At setup the model is traced (``torch.fx``) to find its droppable hidden dimensions
      (:func:`~lightning_fl.nn.find_dropout_groups`), or ``groups`` declares them by hand.
    - At a client's start the kept units are drawn from a seed (8 bytes on the downlink say which), the client's
      submodel is cut from the global model (kept rows, columns, biases and BatchNorm entries gathered into smaller
      dense tensors) and goes through the downlink codec; the module's parameters and buffers are then pointed at
      that small storage (``tensor.data``). The parameter objects stay the same, so the optimizers configured by
      ``configure_optimizers`` keep working (their state is cleared per client anyway) and forward and backward
      cost what the small model costs. No ``1/keep`` rescaling is applied.
    - At the client's end the small update goes through the uplink codec, is scattered into a full-size zero
      update, and the server averages every coordinate over the clients that held it (weights per coordinate);
      coordinates no client held keep their value (with the plain server step; server momentum still moves them).
    - At the round's end the module points at its full-size storage again, holding the new global model, so
      validation, checkpoints and the fit's result are the full model.

    Every other algorithm in the Trainer must declare ``supports_submodels = True`` (FedProx, MaliciousClients,
    SystemsSimulation and FedBuff do); stateful codecs (error feedback) are refused.

    Args:
        keep: Fraction of units every client keeps, in (0, 1]; each group keeps ``max(1, round(keep * size))``.
        per: ``"client"`` (default): every client draws its own units, so a round trains more of the model;
            ``"round"``: all clients of a round share one submodel (one seed per round).
        groups: The droppable groups declared by hand (:class:`~lightning_fl.nn.DropoutGroup`, or
            dicts ``{"size": 64, "members": ["fc1.weight:0", "fc1.bias:0", "fc2.weight:1"]}`` from YAML) for models
            the tracer cannot handle; ``None`` traces the model.

    Example:
        >>> FederatedDropout(keep=0.75).keep
        0.75
    """

    provides_submodels = True
    supports_submodels = True
    # Works with stacked clients: this callback has no per-step hook, its client work is the layout's (cut at the
    # client's download, scatter at its upload, both per client), and every client's submodel has the same shapes
    # (SubmodelPlan.small_shape depends on keep only, not on the units drawn), so a chunk's clients stack.
    supports_cohorts = True

    def __init__(
        self, keep: float = 0.75, per: Per = "client", groups: Sequence[DropoutGroup | dict[str, Any]] | None = None
    ) -> None:
        super().__init__()
        self.keep = check_fraction("keep", keep, low_open=True)
        self.per: Per = check_choice("per", per, ("client", "round"))
        self.groups = None if groups is None else [_as_group(g) for g in groups]
        self._submodels: ClientSubmodels | None = None

    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if self.groups is None:
            self.groups = find_dropout_groups(pl_module)
            if not self.groups:
                raise FederatedConfigError(
                    f"{type(pl_module).__name__} has no hidden units Federated Dropout can drop (only the inputs and "
                    "outputs were found); declare groups by hand with FederatedDropout(groups=[...])"
                )

    @override
    def client_layout(self, pl_module: "pl.LightningModule", state: FlatState, seed: int) -> ClientSubmodels:
        assert self.groups is not None, "setup() runs before fit start"
        plan = SubmodelPlan(pl_module, self.groups, self.keep)
        self._submodels = ClientSubmodels(state, plan, module_tensors(pl_module), seed, self.per)
        self._fraction = self._submodels.layout.numel / max(state.numel, 1)
        return self._submodels

    @override
    def on_round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> dict[str, float]:
        return {"fl/submodel_fraction": self._fraction}

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        # a fit interrupted in the middle of a round leaves the module small; its full storage holds the last
        # global model
        if self._submodels is not None:
            self._submodels.restore()

    @property
    def submodels(self) -> ClientSubmodels:
        """The fit's submodels (known from fit start)."""
        if self._submodels is None:
            raise FederatedConfigError("FederatedDropout's submodels are built at fit start")
        return self._submodels


def _as_group(group: DropoutGroup | dict[str, Any]) -> DropoutGroup:
    if isinstance(group, DropoutGroup):
        return group
    if isinstance(group, dict) and set(group) <= {"size", "members", "name"} and {"size", "members"} <= set(group):
        return DropoutGroup(group["size"], group["members"], name=str(group.get("name", "")))
    raise FederatedConfigError(
        f"a dropout group must be a DropoutGroup or a dict with 'size' and 'members' (and optionally 'name'), got "
        f"{group!r}"
    )
