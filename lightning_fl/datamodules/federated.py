"""The federated data module: partitions a dataset across clients and feeds each round's clients."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from typing_extensions import override

from lightning_fl.checks import check_bool, check_fraction, check_int
from lightning_fl.datamodules.client_indices import ClientIndices, client_sizes_of
from lightning_fl.datamodules.cohorts import CohortLoader, CohortPlan
from lightning_fl.datamodules.datasets.base import DatasetSource, Splits
from lightning_fl.datamodules.fingerprint import data_fingerprint, fingerprint_changes
from lightning_fl.datamodules.fit_checks import check_server_present
from lightning_fl.datamodules.labels import LabelFn, dataset_labels
from lightning_fl.datamodules.loaders import BatchLoader, RoundLoader, eval_batches, make_batch_loader
from lightning_fl.datamodules.partitioners.base import Partitioner
from lightning_fl.datamodules.plan import (
    CLIENT_SAMPLING_MODES,
    ClientSampling,
    Participation,
    PlanRequest,
    RoundPlan,
    build_round_plan,
    num_client_batches,
    plan_request_of,
)
from lightning_fl.exceptions import CheckpointError, FederatedConfigError
from lightning_fl.namespaces import LightningDataModule
from lightning_fl.seeding import derive_seed


class FederatedDataModule(LightningDataModule):
    """Partitions a training set across clients and yields, for round ``trainer.current_epoch``, the batches of
    that round's sampled clients on this rank, one client after another.

    Validation and test sets are not partitioned: they evaluate the global model, sharded over ranks.

    Args:
        train_dataset: A map-style dataset, or a :class:`DatasetSource` (e.g. ``Digits()``) whose splits supply
            train, validation and test data. ``None`` loads the embedded scikit-learn digits.
        val_dataset: Held-out data for the global model (overrides the source's validation split).
        test_dataset: Test data for ``trainer.test`` (overrides the source's test split).
        partitioner: How training samples are split across clients; ``None`` is an IID split over 100 clients.
        clients_per_round: Clients sampled per round, in ``[1, num_clients]`` (ignored by ``client_sampling="all"``).
        batch_size: Local minibatch size.
        local_epochs: Passes over its data that a client makes per round.
        client_sampling: ``"uniform"`` without replacement, ``"all"`` clients, or ``"size"``-proportional.
        local_val_fraction: Fraction of every client's samples held out as its own validation split, in [0, 1).
        eval_batch_size: Batch size of validation and test loaders.
        num_workers: Data loader worker processes (0 loads in the main process).
        pin_memory: Pin batches in page-locked memory (for GPU training).
        shuffle: Shuffle each client's samples every local epoch (seeded per round, client and epoch).
        seed: Seed of client sampling, shuffling and the local split.
        drop_last: Drop each local epoch's last batch when it is smaller than ``batch_size`` (needed by
            BatchNorm when a client's last batch would hold one sample). A client then runs
            ``local_epochs * (n_k // batch_size)`` batches but keeps its weight ``n_k`` in the average (it holds
            ``n_k`` samples; shuffling lets every one of them take part over epochs and rounds). Every client needs
            at least ``batch_size`` samples: setup refuses a partition with a smaller client.
        collate_fn: How a list of samples becomes a batch in training, validation and test loaders (a padding
            collator for sequences); ``None`` is PyTorch's default collation (tuples and dicts of tensors).
        label_fn: A function of one sample (``dataset[i]``) returning its integer class label, for partitioners
            that need labels (Dirichlet, shards) when the dataset has no ``targets`` attribute and its samples are
            not ``(input, label)`` pairs (dict samples, language-model data). Partitioners that need no labels
            (IID, quantity skew, natural) never read any.

    Raises:
        FederatedConfigError: On any argument outside its allowed range.

    Example:
        >>> from lightning_fl.datamodules import IIDPartitioner
        >>> dm = FederatedDataModule(partitioner=IIDPartitioner(num_clients=10), clients_per_round=3)
        >>> dm.setup("fit")
        >>> dm.num_clients, len(dm.plan_round(0).rank_clients)
        (10, 3)
    """

    def __init__(
        self,
        train_dataset: Dataset | DatasetSource | None = None,
        val_dataset: Dataset | None = None,
        test_dataset: Dataset | None = None,
        partitioner: Partitioner | None = None,
        clients_per_round: int = 10,
        batch_size: int = 16,
        local_epochs: int = 1,
        client_sampling: ClientSampling = "uniform",
        local_val_fraction: float = 0.0,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        pin_memory: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        label_fn: LabelFn | None = None,
    ) -> None:
        super().__init__()
        _check_int("batch_size", batch_size, 1)
        _check_int("local_epochs", local_epochs, 1)
        _check_int("clients_per_round", clients_per_round, 1)
        _check_int("eval_batch_size", eval_batch_size, 1)
        _check_int("num_workers", num_workers, 0)
        if client_sampling not in CLIENT_SAMPLING_MODES:
            raise FederatedConfigError(
                f"client_sampling must be one of {CLIENT_SAMPLING_MODES}, got {client_sampling!r}"
            )
        for name, value in (("collate_fn", collate_fn), ("label_fn", label_fn)):
            if value is not None and not callable(value):
                raise FederatedConfigError(f"{name} must be a callable or None, got {type(value).__name__}")
        check_bool("drop_last", drop_last)
        check_fraction("local_val_fraction", local_val_fraction, high_open=True)
        check_bool("pin_memory", pin_memory)
        check_bool("shuffle", shuffle)
        check_int("seed", seed, low=0)
        if partitioner is None:
            from lightning_fl.datamodules.partitioners import IIDPartitioner

            partitioner = IIDPartitioner(num_clients=100, seed=seed)
        if not isinstance(partitioner, Partitioner):
            raise FederatedConfigError(f"partitioner must be a Partitioner, got {type(partitioner).__name__}")
        n = partitioner.num_clients
        if n is not None and client_sampling != "all" and clients_per_round > n:
            raise FederatedConfigError(f"clients_per_round must be in [1, num_clients={n}], got {clients_per_round}")
        self.source = train_dataset
        self.val_dataset = val_dataset
        self.test_dataset = test_dataset
        self.partitioner = partitioner
        self.clients_per_round = clients_per_round
        self.batch_size = batch_size
        self.local_epochs = local_epochs
        self.client_sampling: ClientSampling = client_sampling
        self.local_val_fraction = local_val_fraction
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.collate_fn = collate_fn
        self.label_fn = label_fn
        self.train_dataset: Dataset | None = None
        #: Every client's training sample indices after ``setup`` (a :class:`ClientIndices`: reads like a list of
        #: arrays, stored flat).
        self.client_indices: Sequence[np.ndarray] = []
        self.client_val_indices: Sequence[np.ndarray] = []
        self._client_sizes: np.ndarray | None = None
        self._current_plan: RoundPlan | None = None
        #: A user override for old code: run every client on rank ``client_id % world_size``. The round's drivers
        #: ask for pinning themselves (:class:`~lightning_fl.datamodules.plan.PlanRequest`).
        self.pin_clients_to_ranks = False
        #: A user override for old code: ``participation(round_idx) -> Participation`` decides who trains and for
        #: how many batches, identically on every rank. Callbacks that decide it (simulated devices) say so through
        #: their driver's :class:`~lightning_fl.datamodules.plan.PlanRequest` instead. ``None``: sample
        #: ``clients_per_round`` clients.
        self.participation: Callable[[int], Participation] | None = None

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer is not None:
            check_server_present(self.trainer)
        if self.train_dataset is not None:
            return
        splits = self._load_splits()
        self.train_dataset = splits.train
        self.val_dataset = self.val_dataset if self.val_dataset is not None else splits.val
        self.test_dataset = self.test_dataset if self.test_dataset is not None else splits.test
        groups = getattr(splits.train, "groups", None)
        labels = self.train_labels(type(self.partitioner).__name__) if self.partitioner.needs_labels else None
        parts = self.partitioner.partition(labels, groups, num_samples=len(splits.train))  # type: ignore[arg-type]
        if self.client_sampling != "all" and self.clients_per_round > len(parts):
            raise FederatedConfigError(
                f"clients_per_round must be in [1, num_clients={len(parts)}], got {self.clients_per_round}"
            )
        self.client_indices, self.client_val_indices = self._split_local(parts)
        empty = np.flatnonzero(self.client_sizes == 0).tolist()
        if empty:
            raise FederatedConfigError(
                f"every client needs at least one training sample; clients {empty[:10]} have none "
                f"(lower local_val_fraction={self.local_val_fraction} or use fewer clients)"
            )
        self._check_drop_last()

    def _check_drop_last(self) -> None:
        """Under ``drop_last`` a client smaller than ``batch_size`` would run no batch at all: refuse it."""
        if not self.drop_last:
            return
        small = np.flatnonzero(self.client_sizes < self.batch_size).tolist()
        if small:
            sizes = self.client_sizes[small[:10]].tolist()
            raise FederatedConfigError(
                f"drop_last=True drops every batch smaller than batch_size={self.batch_size}, so clients with fewer "
                f"samples would never train; clients {small[:10]} have {sizes} samples ({len(small)} clients in all). "
                "Lower batch_size, give the partitioner a larger min_size, or set drop_last=False"
            )

    def train_labels(self, needed_by: str = "this partitioner") -> np.ndarray:
        """Integer class label of every training sample (``label_fn``, the dataset's ``targets``, or the samples'
        own labels), for partitioners and callbacks that need labels; ``needed_by`` is named in the error.

        Raises:
            FederatedConfigError: If the labels cannot be found, saying how to provide them.
        """
        if self.train_dataset is None:
            raise FederatedConfigError("train_labels() needs the training set: call setup() first")
        return dataset_labels(self.train_dataset, self.label_fn, needed_by)

    def _load_splits(self) -> Splits:
        source = self.source
        if source is None:
            from lightning_fl.datamodules.datasets import Digits

            source = Digits(seed=self.seed)
        if isinstance(source, DatasetSource):
            return source.load()
        if not hasattr(source, "__getitem__") or not hasattr(source, "__len__"):
            raise FederatedConfigError(
                f"train_dataset must be a map-style Dataset (with __getitem__ and __len__) or a DatasetSource, "
                f"got {type(source).__name__}"
            )
        return Splits(train=source)

    def _split_local(self, parts: Sequence[np.ndarray]) -> tuple[ClientIndices, ClientIndices]:
        if self.local_val_fraction == 0.0:
            flat = parts if isinstance(parts, ClientIndices) else ClientIndices.from_arrays(parts)
            return flat, ClientIndices.empty(len(parts))
        train: list[np.ndarray] = []
        val: list[np.ndarray] = []
        for client_id, ix in enumerate(parts):
            rng = np.random.default_rng(derive_seed(self.seed, "local_split", client_id))
            perm = ix[rng.permutation(len(ix))]
            n_val = round(len(ix) * self.local_val_fraction)
            val.append(np.sort(perm[:n_val]))
            train.append(np.sort(perm[n_val:]))
        return ClientIndices.from_arrays(train), ClientIndices.from_arrays(val)

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        """The data configuration's fingerprint (dataset size, partitioner and its arguments, partition, plan
        settings), saved in checkpoints once the data is set up."""
        return {"fingerprint": data_fingerprint(self)} if self.train_dataset is not None else {}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Refuse to resume on another data configuration than the checkpoint's.

        Raises:
            CheckpointError: Naming every setting that changed.
        """
        saved = state_dict.get("fingerprint")
        trainer = self.trainer
        if saved is None or (trainer is not None and trainer.state.fn != "fit"):
            return  # test/validate/predict from a checkpoint evaluate its weights: the training data may differ
        if self.train_dataset is None:
            self.setup("fit")
        changes = fingerprint_changes(saved, data_fingerprint(self))
        if changes:
            path = trainer.ckpt_path if trainer is not None else None
            raise CheckpointError(
                f"cannot resume from checkpoint {str(path)!r}: it was written for another data configuration "
                f"({'; '.join(changes)}); the resumed run would not continue the saved one (per-client state is keyed "
                "by client id). Resume with the checkpoint's settings or start a new run"
            )

    # ------------------------------------------------------------------ clients
    @property
    def num_clients(self) -> int:
        """Number of clients (known after ``setup``)."""
        if self.client_indices:
            return len(self.client_indices)
        if self.partitioner.num_clients is None:
            raise FederatedConfigError("num_clients of a natural partition is known only after setup()")
        return self.partitioner.num_clients

    @property
    def client_sizes(self) -> np.ndarray:
        """Training samples of every client: the FedAvg weights n_k (computed once, after ``setup``)."""
        if self._client_sizes is None or len(self._client_sizes) != len(self.client_indices):
            self._client_sizes = client_sizes_of(self.client_indices)
        return self._client_sizes

    @property
    def max_client_steps(self) -> int:
        """Local steps of the largest client in a round (``local_epochs`` passes, ``drop_last`` applied): the
        length of one round on the clock of step-interval learning-rate schedules (known after ``setup``)."""
        if not self.client_indices:
            raise FederatedConfigError("max_client_steps is known only after setup()")
        largest = int(self.client_sizes.max())
        return num_client_batches(largest, self.batch_size, self.local_epochs, self.drop_last)

    @property
    def current_plan(self) -> RoundPlan | None:
        """The plan of the last train loader built (read-only; the runtime reads the plan from the loader)."""
        return self._current_plan

    def effective_plan_request(self) -> PlanRequest:
        """What the plans must honour: this module's own overrides (``pin_clients_to_ranks``, ``participation``)
        merged with the request of every round driver of the fit (the server callback, a round-running module).

        Raises:
            FederatedConfigError: If two of them decide participation.
        """
        own = PlanRequest(self.pin_clients_to_ranks, self.participation)
        return own.merged(plan_request_of(self.trainer), ("the data module's participation", "a round driver"))

    def plan_round(
        self, round_idx: int, world_size: int = 1, rank: int = 0, max_client_batches: int | None = None
    ) -> RoundPlan:
        """The plan of ``round_idx`` as seen by ``rank`` of ``world_size`` (identical inputs on every rank), every
        client cut to its first ``max_client_batches`` batches when given; pinning and participation as
        :meth:`effective_plan_request` says."""
        if not self.client_indices:
            raise FederatedConfigError("call setup() before planning a round")
        request = self.effective_plan_request()
        return build_round_plan(
            round_idx,
            self.client_indices,
            clients_per_round=self.clients_per_round,
            batch_size=self.batch_size,
            local_epochs=self.local_epochs,
            client_sampling=self.client_sampling,
            shuffle=self.shuffle,
            seed=self.seed,
            world_size=world_size,
            rank=rank,
            pin_clients=request.pin_clients,
            participation=request.participation(round_idx) if request.participation is not None else None,
            drop_last=self.drop_last,
            max_client_batches=max_client_batches,
        )

    # ------------------------------------------------------------------ loaders
    @override
    def train_dataloader(self) -> Any:
        trainer = self.trainer
        round_idx = trainer.current_epoch if trainer is not None else 0
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        # Trainer(fast_dev_run=n): one round in which every client runs n batches
        fast_dev_run = getattr(trainer, "fast_dev_run", False) if trainer is not None else False
        cap = int(fast_dev_run) if fast_dev_run else None
        plan = self.plan_round(round_idx, world, rank, max_client_batches=cap)
        self._current_plan = plan
        assert self.train_dataset is not None
        cohort_size = self.effective_plan_request().cohort_size
        if cohort_size is not None:  # vectorized: one step of a chunk of clients per Trainer step
            return CohortLoader(CohortPlan(plan, cohort_size), self.train_dataset, self.collate_fn)
        batches = make_batch_loader(self.train_dataset, plan.batches, self.num_workers, self.pin_memory,
                                    self.collate_fn)
        return RoundLoader(plan, batches)

    def _eval_loader(self, dataset: Dataset | None) -> Any:
        if dataset is None:
            return []
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        batches = eval_batches(len(dataset), self.eval_batch_size, rank, world)  # type: ignore[arg-type]
        return BatchLoader(make_batch_loader(dataset, batches, self.num_workers, self.pin_memory, self.collate_fn))

    @override
    def val_dataloader(self) -> Any:
        return self._eval_loader(self.val_dataset)

    @override
    def test_dataloader(self) -> Any:
        return self._eval_loader(self.test_dataset)

    def client_dataloader(self, client_id: int, split: str = "val") -> Any:
        """Sequential batches over one client's own local ``"val"`` or ``"train"`` samples."""
        if not 0 <= client_id < self.num_clients:
            raise FederatedConfigError(f"client_id must be in [0, {self.num_clients - 1}], got {client_id}")
        if split not in ("val", "train"):
            raise FederatedConfigError(f"split must be 'val' or 'train', got {split!r}")
        ix = (self.client_val_indices if split == "val" else self.client_indices)[client_id]
        assert self.train_dataset is not None
        batches = [ix[i : i + self.eval_batch_size] for i in range(0, len(ix), self.eval_batch_size)]
        return BatchLoader(make_batch_loader(self.train_dataset, batches, self.num_workers, self.pin_memory,
                                            self.collate_fn))


def _check_int(name: str, value: Any, minimum: int) -> None:
    check_int(name, value, low=minimum)
