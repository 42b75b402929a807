"""Group knowledge transfer (FedGKT, He et al. NeurIPS 2020) as a LightningModule: one Trainer epoch is one round.

The :class:`~lightning_fl.datamodules.FederatedDataModule` plan decides which client each training batch
belongs to. Per batch, the module (manual optimization) swaps in that client's own model (kept on CPU in a
:class:`~lightning_fl.gkt.store.ClientStateStore`) and trains it on ``CE + alpha * KD`` against the server's
logits for the same sample ids. After a client's last batch it extracts ``(H, logits, label)`` for each of its
training samples with the trained model in eval mode (as the FedGKT code does) and "uploads" them. At the round's
last batch, before Lightning validates, the server body trains for ``server_epochs`` on every feature received
this round with ``CE + beta * KD`` against the client logits, then returns its logits per sample id.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from typing_extensions import override

from lightning_fl.checkpoint import install_safe_checkpoint_io
from lightning_fl.codecs.base import Codec
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.cursor import RoundCursor, log_round_step
from lightning_fl.federation.trainer_checks import prepare_trainer
from lightning_fl.gkt.config import check_gkt_args, check_gkt_trainer, make_optimizer
from lightning_fl.gkt.cost import edge_cost
from lightning_fl.gkt.evaluation import GKTEvaluator, accuracy_counts, client_models
from lightning_fl.gkt.losses import gkt_loss
from lightning_fl.gkt.resnet import ResNet8Client, ResNetServerBody, full_model
from lightning_fl.gkt.server import ServerRound
from lightning_fl.gkt.store import (
    ClientStateStore,
    SampleLogitTable,
    optimizer_state,
    restore_optimizer_state,
    to_cpu,
)
from lightning_fl.gkt.transfer import FeatureDtype, FeatureLink, check_batch_ids, extract_upload, index_loader
from lightning_fl.seeding import derive_seed

EvalClients = Literal["round", "first"]
#: Byte and round totals that survive checkpoints (keys of ``checkpoint["fedgkt"]``).
_TOTALS = ("uplink_bytes_total", "downlink_bytes_total", "rounds_completed")


class FedGKTModule(pl.LightningModule):
    """Group knowledge transfer: edge clients train a small CNN, the server trains a large body on their features.

    Clients keep their own models between rounds (nothing is averaged). Every client starts from the same
    initial weights (those of ``client`` at fit start). A client distils from the logits the server last sent for
    its samples; until it has received any (its first round of training; all clients in round 0) it trains on
    cross-entropy alone. The server trains only on the features received in the current round.

    Logged per round (``step = round_idx``): ``fl/uplink_bytes``, ``fl/downlink_bytes`` and their totals (the
    ``fl/`` scalars of :class:`~lightning_fl.federation.round_log.RoundStats`), ``gkt/client_loss``,
    ``gkt/client_kd``, ``gkt/server_loss``, ``gkt/server_kd``, ``gkt/client_seconds``, ``gkt/server_seconds``,
    ``gkt/client_local_acc`` (clients on their own local validation split, when the data module holds one); after
    validation ``val/acc`` and ``val/loss`` (combined model: each evaluated client's stem + the server body,
    averaged over clients) and ``gkt/client_acc`` (the evaluated clients' own models, averaged). Parameters and
    forward MACs of the client model versus the full network are printed once and logged as ``gkt/*_params``,
    ``gkt/*_macs``.

    Args:
        client: The edge model; ``forward(x)`` returns ``(logits, H)``. Default: ``ResNet8Client(in_channels,
            num_classes)``.
        server_body: The server model; ``forward(H)`` returns logits. Default: ``ResNetServerBody(server_depth,
            num_classes)``.
        num_classes: Classes (size of the logits that travel).
        in_channels: Input channels of the default client.
        server_depth: Depth of the default server body (56 or 110; any ``9 n + 2``).
        alpha: Weight of the client's KD term.
        beta: Weight of the server's KD term.
        temperature: Distillation temperature T.
        server_epochs: Passes of the server body over the round's features.
        server_batch_size: Minibatch size of server training.
        optimizer: ``"adam"`` (as the FedGKT code) or ``"sgd"``, for clients and server.
        client_lr: Client learning rate.
        server_lr: Server learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty of both optimizers.
        feature_dtype: ``"float32"`` or ``"float16"``: how ``H`` travels (bytes counted accordingly).
        feature_codec: A lightning-fl codec for ``H`` instead of the cast (bytes = its payloads).
        keep_client_optimizer_state: Keep each client's optimizer state (Adam moments) between its rounds, as a
            client device would; ``False`` starts every client round with a fresh optimizer state.
        eval_clients: Clients evaluated after each round: ``"round"`` all of the round's clients, ``"first"``
            only the round's first client (cheaper with large validation sets).
        eval_batch_size: Batch size of feature extraction and server inference.
        max_resident_clients: Client states kept in memory (``None``: all); needs ``spill_dir``.
        spill_dir: Folder for client states beyond ``max_resident_clients``.
        seed: Seed of client and server randomness; ``None`` takes the data module's.

    Raises:
        FederatedConfigError: On an argument outside its allowed range.

    Example:
        >>> m = FedGKTModule(num_classes=10, in_channels=1, server_depth=56)
        >>> logits, h = m.client(torch.zeros(2, 1, 8, 8))
        >>> tuple(m.server_body(h).shape), m.automatic_optimization
        ((2, 10), False)
    """

    #: Clients keep their own models; the CLI must not add a weight-averaging server callback.
    uses_weight_averaging: ClassVar[bool] = False

    def __init__(
        self,
        client: nn.Module | None = None,
        server_body: nn.Module | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
        server_depth: int = 56,
        alpha: float = 1.0,
        beta: float = 1.0,
        temperature: float = 3.0,
        server_epochs: int = 1,
        server_batch_size: int = 64,
        optimizer: Literal["adam", "sgd"] = "adam",
        client_lr: float = 1e-3,
        server_lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        feature_dtype: FeatureDtype = "float32",
        feature_codec: Codec | None = None,
        keep_client_optimizer_state: bool = True,
        eval_clients: EvalClients = "round",
        eval_batch_size: int = 512,
        max_resident_clients: int | None = None,
        spill_dir: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_gkt_args(locals())
        self.save_hyperparameters(ignore=["client", "server_body", "feature_codec"])
        self.automatic_optimization = False
        self.client = client if client is not None else ResNet8Client(in_channels, num_classes)
        self.server_body = server_body if server_body is not None else ResNetServerBody(server_depth, num_classes)
        self.link = FeatureLink(feature_dtype, feature_codec)
        self.store = ClientStateStore(max_resident_clients, spill_dir)
        self.teacher: SampleLogitTable | None = None
        self.init_state: dict[str, Any] | None = None
        self.uplink_bytes_total = 0
        self.downlink_bytes_total = 0
        self.rounds_completed = 0
        self.history: list[dict[str, float]] = []
        self.cost: dict[str, float] = {}
        #: The round's plan and whether a round is open (shared with the server callback's runtime).
        self.round_cursor = RoundCursor()
        self._evaluator: GKTEvaluator | None = None

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule  # type: ignore[attr-defined]
        if stage == "fit":
            prepare_trainer(self.trainer)
            check_gkt_trainer(self.trainer)
            install_safe_checkpoint_io(self.trainer.strategy)  # weights-only loads, clear errors for corrupt files
        if not isinstance(dm, FederatedDataModule):
            raise FederatedConfigError(f"FedGKTModule needs a FederatedDataModule, got {type(dm).__name__}")
        self._dm = dm
        self._seed = dm.seed if self.hparams["seed"] is None else int(self.hparams["seed"])
        self._targets = torch.as_tensor(dm.train_labels("FedGKTModule"), dtype=torch.int64)
        if self.teacher is None:
            self.teacher = SampleLogitTable(len(self._targets), self.hparams["num_classes"])

    @override
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        return [
            make_optimizer(hp["optimizer"], model, hp[lr], hp["momentum"], hp["weight_decay"])
            for model, lr in ((self.client, "client_lr"), (self.server_body, "server_lr"))
        ]

    @override
    def on_fit_start(self) -> None:
        if self.init_state is None:
            self.init_state = to_cpu(self.client.state_dict())
        assert self._dm.train_dataset is not None
        shape = tuple(self._dm.train_dataset[0][0].shape)  # type: ignore[index]
        self.cost, text = edge_cost(self.client, self.server_body, shape)
        rank_zero_info(text)
        for logger in self.trainer.loggers:
            logger.log_metrics(self.cost, step=self.trainer.current_epoch)

    # ------------------------------------------------------------------ round
    @override
    def on_train_epoch_start(self) -> None:
        plan = self.round_cursor.start_round(self.trainer)
        self._round = ServerRound(plan.round_idx)
        self._round_start = time.perf_counter()

    @override
    def training_step(self, batch: Any, batch_idx: int) -> None:
        cursor = self.round_cursor
        client_id = cursor.client_of(batch_idx)
        if client_id < 0:
            return None
        start = time.perf_counter()
        x, y = batch[0], batch[1]
        plan = cursor.plan
        assert plan is not None
        ids = torch.from_numpy(plan.batches[batch_idx]).long()
        if cursor.is_first(batch_idx):
            check_batch_ids(self._targets, ids, y, batch_idx, plan.round_idx)
            self._start_client(client_id)
        self._client_step(x, y, ids)
        if cursor.is_last(batch_idx):
            self._finish_client(client_id)
        self._round.client_seconds += time.perf_counter() - start
        if cursor.closes_round(batch_idx):
            self._finish_round()
        return None

    def _start_client(self, client_id: int) -> None:
        state = self.store.get(client_id)
        assert self.init_state is not None
        self.client.load_state_dict(state["model"] if state is not None else self.init_state)
        saved = state.get("optimizer") if state is not None and self.hparams["keep_client_optimizer_state"] else None
        restore_optimizer_state(self._optimizer(0).optimizer, list(self.client.parameters()), saved)
        seed = derive_seed(self._seed, "gkt_client", self.round_cursor.plan.round_idx, client_id)
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)

    def _optimizer(self, index: int) -> Any:
        """The client's (0) or the server body's (1) optimizer."""
        optimizers = self.optimizers()
        assert isinstance(optimizers, list)
        return optimizers[index]

    def client_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``CE + alpha * KD(logits || teacher)``; CE alone when ``teacher`` is ``None``. Returns ``(loss, kd)``."""
        return gkt_loss(logits, labels, teacher, self.hparams["alpha"], self.hparams["temperature"], mask)

    def _client_step(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> None:
        assert self.teacher is not None
        logits, _ = self.client(x)
        teacher: torch.Tensor | None = None
        mask: torch.Tensor | None = None
        if self.hparams["alpha"] > 0:
            rows, valid = self.teacher.get(ids)
            if bool(valid.any()):
                teacher, mask = rows.to(logits.device), valid.to(logits.device)
        loss, kd = self.client_loss(logits, y, teacher, mask)
        optimizer = self._optimizer(0)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self._round.add_client_loss(loss.detach(), kd, len(y))

    @torch.no_grad()
    def _finish_client(self, client_id: int) -> None:
        optim_state = None
        if self.hparams["keep_client_optimizer_state"]:
            optim_state = optimizer_state(self._optimizer(0).optimizer, list(self.client.parameters()))
        self.store.put(client_id, {"model": self.client.state_dict(), "optimizer": optim_state})
        dm, size = self._dm, self.hparams["eval_batch_size"]
        assert dm.train_dataset is not None
        seed = derive_seed(self._seed, "gkt_features", self.round_cursor.plan.round_idx, client_id)
        self.client.eval()
        try:  # what the trained client sends: (H, logits, label, id) of every training sample, in eval mode
            upload = extract_upload(self.client, client_id, dm.train_dataset, dm.client_indices[client_id], size,
                                    self.device, self.link, seed)
            self._round.uploads.append(upload)
            local = dm.client_val_indices[client_id]
            if len(local):  # the client's own model on its own held-out samples
                correct, total = accuracy_counts(self.client, index_loader(dm.train_dataset, local, size), self.device)
                self._round.local_correct += correct
                self._round.local_total += total
        finally:
            self.client.train()

    def _finish_round(self) -> None:
        assert self.teacher is not None
        server = self._round
        server.train_body(self, self._optimizer(1), self._seed)
        down = server.send_logits(self, self.teacher)
        self.uplink_bytes_total += server.uplink_bytes
        self.downlink_bytes_total += down
        self.rounds_completed += 1
        metrics = server.metrics(down, self.uplink_bytes_total, self.downlink_bytes_total, self._round_start)
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=server.round_idx)
        self.history.append(metrics)
        server.uploads.clear()
        self.round_cursor.end_round()

    @override
    def on_train_epoch_end(self) -> None:
        log_round_step(self.trainer, self)

    # ------------------------------------------------------------------ evaluation
    def _client_model_state(self, client_id: int) -> dict[str, Any]:
        state = self.store.get(client_id)
        assert self.init_state is not None
        return state["model"] if state is not None else self.init_state

    def _start_eval(self) -> None:
        """Evaluate the round's clients (or its first); before any round (sanity check), the initial model."""
        if self.init_state is None:
            self.init_state = to_cpu(self.client.state_dict())
        plan = self._dm.current_plan
        if plan is None or self.trainer.sanity_checking:
            ids = [-1]
        else:
            ids = [int(c) for c in plan.clients] if self.hparams["eval_clients"] == "round" else plan.rank_clients[:1]
        states = [(c, self._client_model_state(c)) for c in ids]
        self._evaluator = GKTEvaluator(client_models(self.client, states), self.server_body)

    def _end_eval(self, prefix: str) -> None:
        assert self._evaluator is not None
        result = self._evaluator.compute()
        self._evaluator = None
        if not result:
            return
        self.log(f"{prefix}/acc", result["combined_acc"], prog_bar=True)
        self.log(f"{prefix}/loss", result["combined_loss"])
        client_name = "gkt/client_acc" if prefix == "val" else f"{prefix}/client_acc"
        self.log(client_name, result["client_acc"], prog_bar=True)
        self.log(f"{client_name}_min", result["client_acc_min"])
        self.log(f"{client_name}_max", result["client_acc_max"])
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            log_round_step(self.trainer, self)

    @override
    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        assert self._evaluator is not None
        self._evaluator.update(batch[0], batch[1])

    @override
    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    @override
    def on_test_epoch_start(self) -> None:
        self._start_eval()

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        assert self._evaluator is not None
        self._evaluator.update(batch[0], batch[1])

    @override
    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def combined_model(self, client_id: int) -> nn.Module:
        """Client ``client_id``'s stem followed by the server body (a copy): the large network for inference.

        Raises:
            FederatedConfigError: If the client model has no ``stem`` attribute.
        """
        stem = getattr(self.client, "stem", None)
        if not isinstance(stem, nn.Module) or self.init_state is None:
            raise FederatedConfigError("combined_model needs a client with a `stem` submodule, after fit has started")
        client = client_models(self.client, [(client_id, self._client_model_state(client_id))])[0][1]
        return full_model(client.stem, copy.deepcopy(self.server_body)).train(self.training)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ checkpoints
    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.round_cursor.refuse_mid_round_checkpoint(
            self.trainer, "clients' models and features of the round are in flight"
        )
        assert self.teacher is not None
        checkpoint["fedgkt"] = {
            "store": self.store.state_dict(),
            "teacher": self.teacher.state_dict(),
            "init_state": self.init_state,
            **{name: getattr(self, name) for name in _TOTALS},
        }

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("fedgkt")
        if saved is None:
            warnings.warn("checkpoint holds no FedGKT client state; clients restart from scratch", stacklevel=2)
            return
        self.store.load_state_dict(saved["store"])
        assert self.teacher is not None, "setup() builds the table before Lightning restores a checkpoint"
        self.teacher.load_state_dict(saved["teacher"])
        self.init_state = saved["init_state"]
        for name in _TOTALS:
            setattr(self, name, int(saved[name]))
