"""Every name a package's ``__all__`` exported before issue 12's move still imports from the same path.

The table was recorded on main (8e423cb) before anything moved; configs, saved LightningCLI configs and user code
name these paths.
"""

from __future__ import annotations

import importlib

import pytest

BEFORE_THE_MOVE: dict[str, list[str]] = {
    "lightning_fl": ["CheckpointError", "ClassifierModule", "DifferentialPrivacy", "FedBN", "FedBuff",
        "FedGKTModule", "FedProx", "FederatedAlgorithm", "FederatedAveraging", "FederatedConfigError",
        "FederatedDDPStrategy", "FederatedDataModule", "FederatedDropout", "FederatedRuntimeError",
        "MaliciousClients", "MaskedRandomNoise", "PayloadError", "PersonalLayers", "PersonalizedEvaluation",
        "RoundProgressBar", "Scaffold", "SystemsSimulation", "federated_trainer_defaults"],
    "lightning_fl.callbacks": ["ClientContext", "DifferentialPrivacy", "FedBN", "FedBuff", "FedProx",
        "FederatedAlgorithm", "FederatedAveraging", "FederatedContext", "FederatedDropout", "MaliciousClients",
        "MaskedRandomNoise", "PersonalLayers", "PersonalizedEvaluation", "RoundContext", "RoundProgressBar",
        "RoundStats", "Scaffold", "SimulatedDevices", "SystemsSimulation"],
    "lightning_fl.codecs": ["BFloat16", "Cast", "Chain", "Codec", "ErrorFeedback", "Float16", "Identity", "Kashin",
        "MagnitudePrune", "MaskedNoiseCodec", "Payload", "RandomHadamard", "RawSerializer", "SignCompressor",
        "Stage", "StageContext", "StageLayout", "StageOutput", "StochasticQuantizer", "Subsample", "TensorPolicy",
        "TerminalStage", "TopK", "TransformStage", "fwht", "index_dtype", "next_power_of_two", "pack_bits",
        "packed_nbytes", "unpack_bits"],
    "lightning_fl.datamodules": ["DatasetSource", "Digits", "DirichletPartitioner", "FedProxSynthetic",
        "FederatedDataModule", "IIDPartitioner", "InMemoryDataset", "LeafDataset", "NaturalPartitioner",
        "Participation", "Partitioner", "QuantitySkewPartitioner", "RoundPlan", "ShardPartitioner", "Splits",
        "TorchvisionDataset", "build_round_plan", "get_source", "load_digits_dataset", "sample_clients"],
    "lightning_fl.datamodules.datasets": ["DatasetSource", "Digits", "FedProxSynthetic", "InMemoryDataset",
        "LeafDataset", "SOURCE_NAMES", "Splits", "TorchvisionDataset", "get_source", "load_digits_dataset"],
    "lightning_fl.datamodules.datasets.leaf": ["ALL_LETTERS", "LEAF_NAMES", "LeafDataset", "VAL_SPLITS",
        "encode_characters"],
    "lightning_fl.datamodules.partitioners": ["DirichletPartitioner", "IIDPartitioner", "NaturalPartitioner",
        "Partitioner", "QuantitySkewPartitioner", "ShardPartitioner"],
    "lightning_fl.gkt": ["Bottleneck", "ClientStateStore", "ClientUpload", "FeatureLink", "FedGKTModule",
        "FullResNet", "GKTEvaluator", "ModelCost", "ResNet8Client", "ResNetServerBody", "SampleLogitTable",
        "count_macs", "count_parameters", "full_model", "gkt_loss", "kd_loss", "kd_per_sample", "resnet110_body",
        "resnet56_body", "resnet8_client", "resnet_stem"],
    "lightning_fl.json_files": ["read_json"],
    "lightning_fl.modules": ["ClassifierModule"],
    "lightning_fl.nn": ["DropoutGroup", "MLP", "ShrunkModule", "SmallCNN", "SubmodelPlan", "TensorSlice",
        "find_dropout_groups"],
    "lightning_fl.server": ["Aggregator", "ClientStore", "CoordinateMedianAggregator", "FlatState",
        "NormClippingAggregator", "ServerAdagrad", "ServerAdam", "ServerOptimizer", "ServerSGD", "ServerYogi",
        "TensorSpec", "TrimmedMeanAggregator", "WeightedMeanAggregator"],
    "lightning_fl.strategies": ["FEDERATED_STRATEGIES", "FederatedDDPStrategy"],
    "lightning_fl.systems": ["BufferedAsyncSchedule", "ClientProfile", "ClientProfiles", "ClientRun", "ClientTimes",
        "DeadlineOutcome", "Distribution", "PRESETS", "RoundRules", "RoundSchedule", "RoundWorkload",
        "apply_deadline", "client_times", "energy_joules", "fednova_scales", "plan_round", "resolve_profiles",
        "staleness_weight", "step_samples", "steps_within", "training_flops_per_sample"],
}


#: Deep paths kept as shims: the documented extension points and the most-imported modules.
SHIMS = {
    "lightning_fl.callbacks.algorithm": ["ClientContext", "FederatedAlgorithm", "FederatedContext", "RoundContext"],
    "lightning_fl.callbacks.fedavg": ["FederatedAveraging"],
    "lightning_fl.callbacks.fedmrn": ["MaskedRandomNoise"],
}


@pytest.mark.parametrize("module", sorted(SHIMS))
def test_shims_give_the_moved_classes(module):
    imported = importlib.import_module(module)
    for name in SHIMS[module]:
        assert getattr(imported, name) is getattr(importlib.import_module("lightning_fl.callbacks"), name)


@pytest.mark.parametrize("module", sorted(BEFORE_THE_MOVE))
def test_public_names_still_import(module):
    imported = importlib.import_module(module)
    missing = [name for name in BEFORE_THE_MOVE[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lost {missing}"
    assert set(BEFORE_THE_MOVE[module]) <= set(imported.__all__), f"{module}.__all__ lost names"
