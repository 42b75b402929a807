"""Partitioners: split a dataset's training samples across clients (IID, label skew, shards, quantity, natural)."""

from lightning_fl.datamodules.partitioners.base import Partitioner
from lightning_fl.datamodules.partitioners.dirichlet import DirichletPartitioner
from lightning_fl.datamodules.partitioners.iid import IIDPartitioner
from lightning_fl.datamodules.partitioners.natural import NaturalPartitioner
from lightning_fl.datamodules.partitioners.quantity import QuantitySkewPartitioner
from lightning_fl.datamodules.partitioners.shards import ShardPartitioner

__all__ = [
    "DirichletPartitioner",
    "IIDPartitioner",
    "NaturalPartitioner",
    "Partitioner",
    "QuantitySkewPartitioner",
    "ShardPartitioner",
]
