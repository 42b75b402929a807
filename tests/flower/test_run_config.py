"""Bad run config values, node configs, instructions and reported sample counts are refused with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError, PayloadError
from lightning_fl.flower.client import partition_id
from lightning_fl.flower.instructions import RoundInstructions
from lightning_fl.flower.run_config import read_run_config
from lightning_fl.flower.run_setup import load_run_setup
from lightning_fl.flower.server_round import check_num_samples


@pytest.mark.parametrize(("run_config", "match"), [
    ({}, r"'config' must be the path of a lightning-fl YAML file, got None"),
    ({"config": "a.yaml", "num-rounds": 0}, r"'num-rounds' must be a positive int, got 0"),
    ({"config": "a.yaml", "num-rounds": True}, r"'num-rounds' must be a positive int, got True"),
    ({"config": "a.yaml", "round-timeout": -1.0}, r"'round-timeout' must be a positive number of seconds, got -1.0"),
    ({"config": "a.yaml", "connect-timeout": "soon"}, r"'connect-timeout' must be a positive number of seconds"),
    ({"config": "a.yaml", "metrics-file": 3}, r"'metrics-file' must be a file path \(''"),
])
def test_bad_run_config_values_are_refused(run_config: dict[str, object], match: str) -> None:
    with pytest.raises(FederatedConfigError, match=match):
        read_run_config(run_config)


def test_empty_paths_mean_unset() -> None:
    settings = read_run_config({"config": "a.yaml", "metrics-file": "", "save-model": ""})
    assert settings.metrics_file is None and settings.save_model is None


def test_a_missing_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FederatedConfigError, match="must be the path of a lightning-fl YAML file"):
        load_run_setup(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("value", [None, -1, 4, "x", True])
def test_a_node_without_a_valid_partition_id_is_refused(value: object) -> None:
    node_config = {} if value is None else {"partition-id": value}
    context = Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})  # type: ignore[arg-type]
    with pytest.raises(FederatedConfigError, match=r"'partition-id' must be a client id in \[0, 3\]"):
        partition_id(context, 4)


def test_instructions_with_a_missing_or_mistyped_field_are_refused() -> None:
    record = RoundInstructions(0, 1, 0, 5, "Identity", "Identity").to_record()
    record["client_id"] = "1"
    with pytest.raises(FederatedRuntimeError, match="instruction 'client_id' must be a int, got '1'"):
        RoundInstructions.from_record(record)
    with pytest.raises(FederatedRuntimeError, match="must be a ConfigRecord"):
        RoundInstructions.from_record(None)
    assert RoundInstructions.from_record(ConfigRecord({**RoundInstructions(0, 1, 0, 5, "a", "b").to_record()}))


@pytest.mark.parametrize("value", [0, -3, 2.5, True, None, 2**60])
def test_a_reported_sample_count_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(PayloadError, match=r"num-samples must be an int in \[1, 2\*\*53\]"):
        check_num_samples(value)
