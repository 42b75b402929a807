"""Federated data: the data module, partitioners, dataset sources and the round plan."""

from lightning_fl.datamodules.datasets import (
    DatasetSource,
    Digits,
    FedProxSynthetic,
    InMemoryDataset,
    LeafDataset,
    Splits,
    TorchvisionDataset,
    get_source,
    load_digits_dataset,
)
from lightning_fl.datamodules.federated import FederatedDataModule
from lightning_fl.datamodules.loaders import BatchLoader, RoundLoader, round_plan_of
from lightning_fl.datamodules.partitioners import (
    DirichletPartitioner,
    IIDPartitioner,
    NaturalPartitioner,
    Partitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
)
from lightning_fl.datamodules.plan import (
    Participation,
    PlanRequest,
    RoundDriver,
    RoundPlan,
    build_round_plan,
    owner_rank,
    plan_request_of,
    sample_clients,
)

__all__ = [
    "BatchLoader",
    "DatasetSource",
    "Digits",
    "DirichletPartitioner",
    "FedProxSynthetic",
    "FederatedDataModule",
    "IIDPartitioner",
    "InMemoryDataset",
    "LeafDataset",
    "NaturalPartitioner",
    "Participation",
    "Partitioner",
    "PlanRequest",
    "QuantitySkewPartitioner",
    "RoundDriver",
    "RoundLoader",
    "RoundPlan",
    "ShardPartitioner",
    "Splits",
    "TorchvisionDataset",
    "build_round_plan",
    "get_source",
    "load_digits_dataset",
    "owner_rank",
    "plan_request_of",
    "round_plan_of",
    "sample_clients",
]
