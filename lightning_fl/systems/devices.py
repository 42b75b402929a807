"""What simulated-device callbacks share: profiles, training FLOPs, payload estimates, the participation hook."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from typing_extensions import override

from lightning_fl.checks import check_int, check_positive
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.datamodules.loaders import make_batch_loader
from lightning_fl.datamodules.plan import Participation
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.federation.algorithm import FederatedAlgorithm, RoundContext
from lightning_fl.federation.layout import SEED_BYTES
from lightning_fl.systems.flops import training_flops_per_sample
from lightning_fl.systems.profiles import ClientProfiles, resolve_profiles


class SimulatedDevices(FederatedAlgorithm, ABC):
    """Base of callbacks that simulate client devices and decide, before a round trains, who takes part.

    It installs :meth:`participation` as the data module's participation hook, resolves the profiles at fit start
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
        owner = getattr(dm.participation, "__self__", None)
        if dm.participation is not None and owner is not self:
            taken_by = type(owner).__name__ if owner is not None else repr(dm.participation)
            raise FederatedConfigError(
                f"{type(self).__name__} decides who trains each round, but the data module's participation hook is "
                f"already taken by {taken_by}: use one of them"
            )
        dm.participation = self.participation
        self._dm = dm

    @override
    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if self._dm is not None and getattr(self._dm.participation, "__self__", None) is self:
            self._dm.participation = None

    @override
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        dm = self._dm
        assert dm is not None
        seed = self._base_seed(dm)
        self._profiles = resolve_profiles(self.profiles, dm.num_clients, seed)
        self._module = pl_module

    def _count_flops(self) -> float:
        """Training FLOPs per sample of what a client trains: the module, or the submodel a client holds when
        Federated Dropout shrinks it (counted on one draw; every draw has the same shapes)."""
        dm, pl_module = self._dm, self._module
        assert dm is not None and dm.train_dataset is not None
        indices = dm.client_indices[0][: dm.batch_size]
        batch = next(iter(make_batch_loader(dm.train_dataset, [indices], 0, False)))
        batch = move_data_to_device(batch, pl_module.device)
        sub = self.fedavg.submodels
        if sub is None:
            flops = training_flops_per_sample(pl_module, batch, len(indices))
        else:
            with sub.applied(0, 0):
                flops = training_flops_per_sample(pl_module, batch, len(indices))
        if flops <= 0:
            raise FederatedConfigError(
                f"counted 0 training FLOPs for {type(pl_module).__name__} (no matmul or convolution): pass "
                "flops_per_sample"
            )
        return flops

    def _base_seed(self, dm: FederatedDataModule) -> int:
        if self.seed is not None:
            return int(self.seed)
        fedavg_seed = self._fedavg.seed if self._fedavg is not None else None
        return int(dm.seed if fedavg_seed is None else fedavg_seed)

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
            self.payload_estimate = self._probe_payloads()
        planned = self.schedule(round_idx)
        self._planned = (round_idx, planned)
        return planned

    @abstractmethod
    def schedule(self, round_idx: int) -> Participation:
        """Simulate the round and return its participation."""

    @torch.no_grad()
    def _probe_payloads(self) -> tuple[float, float]:
        fedavg = self.fedavg
        state = fedavg.state
        local = self.context.local_names
        views = state.views
        sub = fedavg.submodels
        if sub is not None:  # what a client holds under Federated Dropout, and the seed that says which units
            small, views = sub.layout.new_flat()
            sub.gather(state.flat, sub.select(0, 0), small)
        names = [s.name for s in state.float_specs if s.name not in local]
        tensors = [v for s, v in zip(state.float_specs, views, strict=True) if s.name not in local]
        ints = [v for s, v in zip(state.int_specs, state.int_views, strict=True) if s.name not in local]
        int_bytes = sum(fedavg.uplink.raw.encode(t, 0).nbytes for t in ints)
        sizes = []
        for link in (fedavg.downlink, fedavg.uplink):
            nbytes, _ = copy.deepcopy(link).send(names, tensors, seed=self.context.seed, round_idx=0, client_id=0)
            sizes.append(float(nbytes + int_bytes))
        return sizes[0] + (SEED_BYTES if sub is not None else 0), sizes[1]

    def _update_payload_estimate(self, round_context: RoundContext) -> None:
        fedavg = self.fedavg
        down = fedavg.downlink_bytes_total - self._seen_bytes[0]
        up = fedavg.uplink_bytes_total - self._seen_bytes[1]
        self._seen_bytes = (fedavg.downlink_bytes_total, fedavg.uplink_bytes_total)
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
