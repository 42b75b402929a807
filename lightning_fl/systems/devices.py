"""What simulated-device callbacks share: profiles, training FLOPs, payload estimates, the participation hook."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.apply_func import move_data_to_device
from typing_extensions import override

from lightning_fl.checks import check_int, check_positive
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.datamodules.loaders import make_batch_loader
from lightning_fl.datamodules.plan import Participation
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.federation.algorithm import FederatedAlgorithm, FederatedContext, RoundContext
from lightning_fl.systems.flops import training_flops_per_sample
from lightning_fl.systems.profiles import ClientProfiles, resolve_profiles


class SimulatedDevices(FederatedAlgorithm, ABC):
    """Base of callbacks that simulate client devices and decide, before a round trains, who takes part.

    It declares ``decides_participation``: the server callback asks :meth:`participation` who trains each round
    (through its :class:`~lightning_fl.datamodules.plan.PlanRequest`). It resolves the profiles at fit start
    (a preset drawn from ``derive_seed(seed, "profiles", field)``, a file or a :class:`ClientProfiles`) and, unless
    ``flops_per_sample`` is given, counts what a client trains once before the first round: one ``training_step``
    and ``backward`` on a batch of client 0 under ``torch.utils.flop_counter``, on the submodel a client holds when
    Federated Dropout shrinks it (the module is left untouched).

    Payload bytes for the clock: decisions are taken before a round trains, so they use an estimate per client and
    direction: for the first round, the bytes of the initial global model (a client's submodel under Federated
    Dropout) sent through copies of the server callback's downlink and uplink links (exact for codecs whose payload
    size depends only on the shapes); later, the mean payload per client measured by the server callback in the
    previous round (``fl/downlink_bytes`` per client that trained, ``fl/uplink_bytes`` per update aggregated).

    Subclasses implement :meth:`schedule` (the round's participation) and report their metrics.
    """

    decides_participation = True
    supports_submodels = True  # the FLOPs and bytes are counted on the submodel a client holds
    # Participation (who trains, each client's number of local steps) is decided before the round, update scaling in
    # on_client_update and the clock at the round's end: nothing acts on a local step.
    supports_cohorts = True

    def __init__(self, profiles: ClientProfiles | str, flops_per_sample: float | None, seed: int | None) -> None:
        super().__init__()
        if not isinstance(profiles, (str, ClientProfiles)):
            raise FederatedConfigError(
                f"profiles must be a preset name, a .csv/.json path or ClientProfiles, got {type(profiles).__name__}"
            )
        self.profiles = profiles
        flops = flops_per_sample
        self.flops_per_sample = None if flops is None else check_positive("flops_per_sample", flops)
        self.seed = None if seed is None else check_int("seed", seed, low=0)
        # state that survives checkpoints
        self.sim_seconds_total = 0.0
        self.energy_joules_total = 0.0
        self.network_bytes_total = 0.0
        self.payload_estimate: tuple[float, float] | None = None  # (downlink, uplink) bytes per client
        self._seen_bytes = (0, 0)
        self.history: list[dict[str, float]] = []
        self._planned: tuple[int, Participation] | None = None
        self._dm: FederatedDataModule | None = None

    # ------------------------------------------------------------------ wiring
    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, FederatedDataModule):
            raise FederatedConfigError(f"{type(self).__name__} needs a FederatedDataModule, got {type(dm).__name__}")
        self._dm = dm
        self._module = pl_module

    @override
    def on_federated_fit_start(self, context: FederatedContext) -> None:
        super().on_federated_fit_start(context)
        self._profiles = resolve_profiles(self.profiles, context.datamodule.num_clients, self._base_seed())

    def _count_flops(self) -> float:
        """Training FLOPs per sample of what a client trains: the module, or the submodel a client holds when
        Federated Dropout shrinks it (counted on one draw; every draw has the same shapes)."""
        dm, pl_module = self._dm, self._module
        assert dm is not None and dm.train_dataset is not None
        indices = dm.client_indices[0][: dm.batch_size]
        batch = next(iter(make_batch_loader(dm.train_dataset, [indices], 0, False)))
        batch = move_data_to_device(batch, pl_module.device)
        with self.context.layout.applied(0, 0):
            flops = training_flops_per_sample(pl_module, batch, len(indices))
        if flops <= 0:
            raise FederatedConfigError(
                f"counted 0 training FLOPs for {type(pl_module).__name__} (no matmul or convolution): pass "
                "flops_per_sample"
            )
        return flops

    def _base_seed(self) -> int:
        """This callback's seed, else the federated seed (known from fit start)."""
        return int(self.seed) if self.seed is not None else self.context.seed

    @property
    def client_profiles(self) -> ClientProfiles:
        """The resolved profiles (known from fit start)."""
        profiles = getattr(self, "_profiles", None)
        if profiles is None:
            raise FederatedRuntimeError(f"{type(self).__name__}'s profiles are resolved at fit start")
        return profiles

    # ------------------------------------------------------------------ the participation hook
    def participation(self, round_idx: int) -> Participation:
        """Who trains in ``round_idx`` and for how many batches (the data module calls this once per round; a second
        call for the same round returns the same answer without advancing the simulation)."""
        if self._planned is not None and self._planned[0] == round_idx:
            return self._planned[1]
        if self.flops_per_sample is None:
            self.flops_per_sample = self._count_flops()
        if self.payload_estimate is None:
            self.payload_estimate = self.context.estimate_payload_bytes()
        planned = self.schedule(round_idx)
        self._planned = (round_idx, planned)
        return planned

    @abstractmethod
    def schedule(self, round_idx: int) -> Participation:
        """Simulate the round and return its participation."""

    def _update_payload_estimate(self, round_context: RoundContext) -> None:
        down, up = round_context.downlink_bytes, round_context.uplink_bytes
        # the running totals of the bytes seen, kept under their old checkpoint key
        self._seen_bytes = (self._seen_bytes[0] + down, self._seen_bytes[1] + up)
        assert self.payload_estimate is not None
        started, reported = len(round_context.clients), round_context.reported
        self.payload_estimate = (
            down / started if started else self.payload_estimate[0],
            up / reported if reported else self.payload_estimate[1],
        )

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "sim_seconds_total": self.sim_seconds_total,
            "energy_joules_total": self.energy_joules_total,
            "network_bytes_total": self.network_bytes_total,
            "payload_estimate": self.payload_estimate,
            "seen_bytes": self._seen_bytes,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sim_seconds_total = float(state_dict["sim_seconds_total"])
        self.energy_joules_total = float(state_dict["energy_joules_total"])
        self.network_bytes_total = float(state_dict["network_bytes_total"])
        estimate = state_dict["payload_estimate"]
        self.payload_estimate = None if estimate is None else (float(estimate[0]), float(estimate[1]))
        self._seen_bytes = (int(state_dict["seen_bytes"][0]), int(state_dict["seen_bytes"][1]))
