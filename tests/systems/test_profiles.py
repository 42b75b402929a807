"""Client profiles: presets from seeds, files one row per client, clear errors on bad values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightning_fl import FederatedConfigError
from lightning_fl.systems import PRESETS, ClientProfiles, Distribution, resolve_profiles
from lightning_fl.systems.profiles import FIELDS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_seeded_and_valid(name):
    a = ClientProfiles.preset(name, num_clients=50, seed=3)
    b = ClientProfiles.preset(name, num_clients=50, seed=3)
    c = ClientProfiles.preset(name, num_clients=50, seed=4)
    assert len(a) == 50
    for field in FIELDS:
        np.testing.assert_array_equal(a.columns[field], b.columns[field])
    assert not np.array_equal(a.columns["flops_per_second"], c.columns["flops_per_second"]) or name in (
        "homogeneous"
    )
    assert np.all((a.availability >= 0) & (a.availability <= 1))


def test_phones_are_heavy_tailed_and_slower_than_edge_boxes():
    phones = ClientProfiles.preset("phones", num_clients=2000, seed=0)
    edge = ClientProfiles.preset("edge", num_clients=2000, seed=0)
    speed = phones.flops_per_second
    assert np.percentile(speed, 95) / np.median(speed) > 3  # log-normal, sigma 1: about 5.2
    assert np.median(edge.flops_per_second) > 10 * np.median(speed)
    assert np.median(phones.uplink_bytes_per_second) < np.median(phones.downlink_bytes_per_second)


def test_csv_and_json_round_trip(tmp_path):
    profiles = ClientProfiles.preset("uniform", num_clients=5, seed=1)
    profiles.to_csv(tmp_path / "p.csv")
    loaded = ClientProfiles.from_file(tmp_path / "p.csv")
    for field in FIELDS:
        np.testing.assert_array_equal(loaded.columns[field], profiles.columns[field])
    rows = [{"flops_per_second": 1e9, "downlink_bytes_per_second": 2e6, "uplink_bytes_per_second": 5e5,
             "availability": 0.5}, {"flops_per_second": 2e9, "downlink_bytes_per_second": 1e6,
                                    "uplink_bytes_per_second": 1e6}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    loaded = ClientProfiles.from_file(tmp_path / "p.json")
    assert loaded[0].availability == 0.5 and loaded[1].availability == 1.0  # default: always available
    assert loaded[1].flops_per_second == 2e9


def test_sample_from_named_distributions():
    profiles = ClientProfiles.sample(
        100, seed=0, flops_per_second=Distribution("loguniform", 1e8, 1e10),
        downlink_bytes_per_second=Distribution("constant", 1e6), uplink_bytes_per_second=Distribution("uniform", 1, 2),
    )
    assert profiles.flops_per_second.min() >= 1e8 and profiles.flops_per_second.max() <= 1e10
    assert set(profiles.downlink_bytes_per_second.tolist()) == {1e6}


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"flops_per_second": [1e9], "downlink_bytes_per_second": [0.0], "uplink_bytes_per_second": [1.0]},
         "downlink_bytes_per_second must be > 0"),
        ({"flops_per_second": [1e9], "downlink_bytes_per_second": [1.0], "uplink_bytes_per_second": [1.0],
          "availability": [1.5]}, r"availability must be in \[0, 1\] for every client, got 1.5 for client 0"),
        ({"flops_per_second": [1e9], "downlink_bytes_per_second": [1.0]}, "missing"),
        ({"flops_per_second": [1e9], "downlink_bytes_per_second": [1.0], "uplink_bytes_per_second": [1.0],
          "gpus": [1]}, "unknown"),
        ({"flops_per_second": [1e9, 2e9], "downlink_bytes_per_second": [1.0], "uplink_bytes_per_second": [1.0]},
         "needs 2 values"),
    ],
)
def test_bad_profiles_are_refused(columns, match):
    with pytest.raises(FederatedConfigError, match=match):
        ClientProfiles(**columns)


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(FederatedConfigError, match="preset must be one of"):
        resolve_profiles("tablets", 3, 0)
    with pytest.raises(FederatedConfigError, match="num_clients=4, got 3 profiles"):
        resolve_profiles(ClientProfiles.preset("edge", 3), 4, 0)
    with pytest.raises(FederatedConfigError, match=r"must end in .csv or .json"):
        ClientProfiles.from_file(tmp_path / "p.txt")
    (tmp_path / "bad.csv").write_text("flops_per_second,downlink_bytes_per_second,uplink_bytes_per_second\n1,x,1\n")
    with pytest.raises(FederatedConfigError, match="downlink_bytes_per_second"):
        ClientProfiles.from_csv(tmp_path / "bad.csv")
    with pytest.raises(FederatedConfigError, match="a <= b"):
        Distribution("uniform", 2.0, 1.0)
