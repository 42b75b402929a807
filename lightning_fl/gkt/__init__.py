"""Group knowledge transfer (FedGKT): edge clients train a ResNet-8, the server a ResNet-56/110 body on their
features, with distillation both ways."""

from lightning_fl.gkt.cost import ModelCost, count_macs, count_parameters
from lightning_fl.gkt.evaluation import GKTEvaluator
from lightning_fl.gkt.losses import gkt_loss, kd_loss, kd_per_sample
from lightning_fl.gkt.module import FedGKTModule
from lightning_fl.gkt.resnet import (
    Bottleneck,
    FullResNet,
    ResNet8Client,
    ResNetServerBody,
    full_model,
    resnet8_client,
    resnet56_body,
    resnet110_body,
    resnet_stem,
)
from lightning_fl.gkt.store import ClientStateStore, SampleLogitTable
from lightning_fl.gkt.transfer import ClientUpload, FeatureLink

__all__ = [
    "Bottleneck",
    "ClientStateStore",
    "ClientUpload",
    "FeatureLink",
    "FedGKTModule",
    "FullResNet",
    "GKTEvaluator",
    "ModelCost",
    "ResNet8Client",
    "ResNetServerBody",
    "SampleLogitTable",
    "count_macs",
    "count_parameters",
    "full_model",
    "gkt_loss",
    "kd_loss",
    "kd_per_sample",
    "resnet8_client",
    "resnet56_body",
    "resnet110_body",
    "resnet_stem",
]
