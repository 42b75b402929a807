"""Aggregating clients that held different parts of the model: each coordinate over the clients that held it."""

from __future__ import annotations

import pytest
import torch

from lightning_fl import FederatedConfigError, FederatedRuntimeError
from lightning_fl.server.aggregator import WeightedMeanAggregator
from lightning_fl.server.robust import CoordinateMedianAggregator, NormClippingAggregator


def hand_example(agg) -> None:
    # client A (weight 1) held coordinates {0, 1}; client B (weight 3) held {1, 2}; nobody held coordinate 3
    agg.bind(4, torch.device("cpu"), per_coordinate=True)
    agg.update(torch.tensor([1.0, 2.0, 0.0, 0.0]), 1.0, coverage=torch.tensor([1.0, 1.0, 0.0, 0.0]))
    agg.update(torch.tensor([0.0, 4.0, 8.0, 0.0]), 3.0, coverage=torch.tensor([0.0, 1.0, 1.0, 0.0]))


def test_each_coordinate_is_divided_by_the_weight_of_the_clients_that_held_it():
    agg = WeightedMeanAggregator()
    hand_example(agg)
    # coordinate 0: 1*1/1; coordinate 1: (1*2 + 3*4)/(1+3); coordinate 2: 3*8/3; coordinate 3: untouched
    assert agg.compute().tolist() == [1.0, 3.5, 8.0, 0.0]
    # over all clients (total weight 8 of which 4 reported): the same means scaled by 4/8
    assert agg.compute(denominator=8.0).tolist() == [0.5, 1.75, 4.0, 0.0]
    agg.reset()
    assert agg.compute().tolist() == [0.0, 0.0, 0.0, 0.0]


def test_dividing_by_all_clients_instead_would_be_caught():
    agg = WeightedMeanAggregator()
    hand_example(agg)
    assert agg.compute()[0] != (1.0 * 1.0) / 4.0  # the plain weighted mean gives 0.25 for coordinate 0


def test_norm_clipping_keeps_per_coordinate_weights():
    agg = NormClippingAggregator(max_norm=100.0)
    hand_example(agg)
    assert agg.compute().tolist() == [1.0, 3.5, 8.0, 0.0]


def test_aggregators_that_cannot_weigh_coordinates_refuse_and_coverage_must_match_the_binding():
    with pytest.raises(FederatedConfigError, match=r"CoordinateMedianAggregator cannot combine .*Federated Dropout"):
        CoordinateMedianAggregator().bind(4, torch.device("cpu"), per_coordinate=True)
    agg = WeightedMeanAggregator(2)
    with pytest.raises(FederatedRuntimeError, match="per_coordinate=False, but an update came with a coverage"):
        agg.update(torch.ones(2), 1.0, coverage=torch.ones(2))
