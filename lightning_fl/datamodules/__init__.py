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
from lightning_fl.datamodules.partitioners import (
    DirichletPartitioner,
    IIDPartitioner,
    NaturalPartitioner,
    Partitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
)
from lightning_fl.datamodules.plan import Participation, RoundPlan, build_round_plan, sample_clients

__all__ = [
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
    "QuantitySkewPartitioner",
    "RoundPlan",
    "ShardPartitioner",
    "Splits",
    "TorchvisionDataset",
    "build_round_plan",
    "get_source",
    "load_digits_dataset",
    "sample_clients",
]
