"""The shared argument checks, and every public constructor refusing NaN, infinities, bools and out-of-range values."""

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lightning_fl.callbacks import (
    DifferentialPrivacy,
    FedBuff,
    FederatedAveraging,
    FederatedDropout,
    FedProx,
    MaliciousClients,
    MaskedRandomNoise,
    PersonalizedEvaluation,
    PersonalLayers,
    SystemsSimulation,
)
from lightning_fl.checks import (
    check_bool,
    check_choice,
    check_float,
    check_fraction,
    check_int,
    check_non_negative,
    check_positive,
    check_strings,
)
from lightning_fl.codecs import (
    Kashin,
    MagnitudePrune,
    MaskedNoiseCodec,
    StochasticQuantizer,
    Subsample,
    TensorPolicy,
    TopK,
)
from lightning_fl.datamodules import DirichletPartitioner, FederatedDataModule, IIDPartitioner, QuantitySkewPartitioner
from lightning_fl.datamodules.datasets import Digits, FedProxSynthetic
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.gkt import FedGKTModule
from lightning_fl.modules import ClassifierModule
from lightning_fl.nn import MLP
from lightning_fl.server import (
    NormClippingAggregator,
    ServerAdagrad,
    ServerAdam,
    ServerSGD,
    ServerYogi,
    TrimmedMeanAggregator,
)
from lightning_fl.systems import Distribution

NAN, INF = math.nan, math.inf

# ---------------------------------------------------------------------------------------------- the checks module


def test_check_float_accepts_real_numbers_and_returns_floats() -> None:
    assert check_float("x", 3) == 3.0 and type(check_float("x", 3)) is float
    assert check_float("x", np.float32(0.5), 0, 1) == 0.5
    assert check_float("x", np.int64(2), low=0) == 2.0


@pytest.mark.parametrize("value", [NAN, INF, -INF, True, False, "1.0", None, [1.0]])
def test_check_float_refuses_non_finite_bools_and_non_numbers(value: Any) -> None:
    with pytest.raises(FederatedConfigError, match=rf"^lr must be a finite number > 0, got {re_escape(value)}$"):
        check_float("lr", value, low=0, low_open=True)


def test_check_float_ends_open_and_closed() -> None:
    assert check_float("p", 0.0, 0, 1) == 0.0 and check_float("p", 1.0, 0, 1) == 1.0
    with pytest.raises(FederatedConfigError, match=r"^p must be in \(0, 1\], got 0.0$"):
        check_float("p", 0.0, 0, 1, low_open=True)
    with pytest.raises(FederatedConfigError, match=r"^p must be in \[0, 1\), got 1.0$"):
        check_float("p", 1.0, 0, 1, high_open=True)
    with pytest.raises(FederatedConfigError, match=r"^beta must be in \[0, 0.5\), got 0.5$"):
        check_float("beta", 0.5, 0, 0.5, high_open=True)
    with pytest.raises(FederatedConfigError, match=r"^x must be a finite number <= 2, got 3$"):
        check_float("x", 3, high=2)
    with pytest.raises(FederatedConfigError, match=r"^x must be a finite number, got nan$"):
        check_float("x", NAN)


def test_positive_non_negative_and_fraction() -> None:
    assert check_positive("mu", 1e-9) == 1e-9 and check_non_negative("mu", 0) == 0.0
    assert check_fraction("keep", 1) == 1.0
    for check, value in ((check_positive, 0.0), (check_non_negative, -1e-12), (check_fraction, 1.5)):
        with pytest.raises(FederatedConfigError, match=r"^v must be"):
            check(name="v", value=value)


def test_check_int() -> None:
    assert check_int("k", np.int64(3), low=1) == 3 and type(check_int("k", np.int64(3))) is int
    assert check_int("k", -5) == -5
    for bad in (True, 2.0, 2.5, "2", None, NAN):
        with pytest.raises(FederatedConfigError, match=r"^k must be an integer >= 1, got "):
            check_int("k", bad, low=1)
    with pytest.raises(FederatedConfigError, match=r"^bits must be an integer in \[1, 16\], got 17$"):
        check_int("bits", 17, low=1, high=16)
    with pytest.raises(FederatedConfigError, match=r"^k must be an integer <= 4, got 5$"):
        check_int("k", 5, high=4)


def test_check_bool_and_choice() -> None:
    assert check_bool("flag", False) is False
    for bad in (1, 0, "yes", None):
        with pytest.raises(FederatedConfigError, match=r"^flag must be True or False, got "):
            check_bool("flag", bad)
    assert check_choice("per", "round", ("client", "round")) == "round"
    with pytest.raises(FederatedConfigError, match=r"^per must be one of \['client', 'round'\], got 'batch'$"):
        check_choice("per", "batch", ("client", "round"))
    with pytest.raises(FederatedConfigError, match=r"^flag must be one of"):
        check_choice("flag", True, (1, 2))  # True == 1, but a bool is not the choice 1


def test_check_strings() -> None:
    assert check_strings("include", "*.weight") == ("*.weight",)
    assert check_strings("include", ("a", "b")) == ("a", "b")
    assert check_strings("include", None) == () and check_strings("include", []) == ()
    with pytest.raises(FederatedConfigError, match=r"^modules must name at least one entry, got \[\]$"):
        check_strings("modules", [], allow_empty=False)
    with pytest.raises(FederatedConfigError, match=r"^modules must name at least one entry, got None$"):
        check_strings("modules", None, allow_empty=False)
    with pytest.raises(FederatedConfigError, match=r"^include must not hold an empty string, got \['a', ''\]$"):
        check_strings("include", ["a", ""])
    for bad in (3, [b"x"], {"a": 1}, ["a", None]):
        with pytest.raises(FederatedConfigError, match=r"^include must be a string or a list of strings, got "):
            check_strings("include", bad)


def re_escape(value: Any) -> str:
    return re.escape(repr(value))


# ------------------------------------------------------------------------------ every constructor, bad values

Factory = Callable[..., Any]
POSITIVE_FLOAT = (0.0, -1.0, NAN, INF, -INF, True)
NON_NEGATIVE_FLOAT = (-1e-3, NAN, INF, -INF, True)
FRACTION_OPEN_LOW = (0.0, 1.5, NAN, INF, True)
UNIT_HALF_OPEN = (-0.1, 1.0, NAN, INF, True)  # [0, 1)
POSITIVE_INT = (0, -1, 2.0, True, NAN)

CASES: list[tuple[Factory, str, tuple[Any, ...]]] = [
    # named in issue 16
    (ClassifierModule, "lr", POSITIVE_FLOAT),
    (ServerSGD, "lr", POSITIVE_FLOAT),
    (ServerAdam, "lr", POSITIVE_FLOAT),
    (ServerAdagrad, "lr", POSITIVE_FLOAT),
    (ServerYogi, "lr", POSITIVE_FLOAT),
    (ServerAdam, "beta1", UNIT_HALF_OPEN),
    (ServerAdam, "beta2", UNIT_HALF_OPEN),
    (ServerYogi, "tau", POSITIVE_FLOAT),  # the paper's epsilon
    (FedProx, "mu", NON_NEGATIVE_FLOAT),
    (MaskedNoiseCodec, "sigma", POSITIVE_FLOAT),
    (MaskedRandomNoise, "sigma", POSITIVE_FLOAT),
    (DifferentialPrivacy, "clip_norm", POSITIVE_FLOAT),
    (DifferentialPrivacy, "noise_multiplier", (*NON_NEGATIVE_FLOAT, 1e300)),  # inf hung opacus, 1e300 overflowed
    (MaliciousClients, "scale", POSITIVE_FLOAT),
    (NormClippingAggregator, "max_norm", POSITIVE_FLOAT),
    (FedProxSynthetic, "alpha", NON_NEGATIVE_FLOAT),  # nan used to give val/acc 1.0 on one-class data
    (FedProxSynthetic, "beta", NON_NEGATIVE_FLOAT),
    # the rest of the package
    (ClassifierModule, "momentum", UNIT_HALF_OPEN),
    (ClassifierModule, "weight_decay", NON_NEGATIVE_FLOAT),
    (ClassifierModule, "num_classes", (1, 2.0, True)),
    (ServerSGD, "momentum", UNIT_HALF_OPEN),
    (ServerSGD, "nesterov", (1, "yes")),
    (TrimmedMeanAggregator, "beta", (-0.1, 0.5, NAN, True)),
    (DifferentialPrivacy, "delta", (0.0, 1.0, NAN, True)),
    (MaliciousClients, "fraction", (-0.1, 1.1, NAN, True)),
    (MaliciousClients, "num_classes", (1, 2.5, True)),
    (FederatedAveraging, "seed", (-1, 1.5, True)),
    (FedBuff, "staleness_exponent", POSITIVE_FLOAT),
    (FedBuff, "buffer_size", POSITIVE_INT),
    (FederatedDropout, "keep", FRACTION_OPEN_LOW),
    (SystemsSimulation, "deadline", POSITIVE_FLOAT),
    (SystemsSimulation, "over_selection", NON_NEGATIVE_FLOAT),
    (SystemsSimulation, "flops_per_sample", POSITIVE_FLOAT),
    (SystemsSimulation, "min_local_steps", POSITIVE_INT),
    (PersonalizedEvaluation, "lr", POSITIVE_FLOAT),
    (PersonalizedEvaluation, "every_n_rounds", POSITIVE_INT),
    (StochasticQuantizer, "bits", (0, 17, 8.0, True)),
    (TopK, "fraction", FRACTION_OPEN_LOW),
    (TopK, "k", POSITIVE_INT),
    (MagnitudePrune, "density", FRACTION_OPEN_LOW),
    (Subsample, "fraction", FRACTION_OPEN_LOW),
    (Kashin, "eta", FRACTION_OPEN_LOW),
    (Kashin, "delta", POSITIVE_FLOAT),
    (Kashin, "redundancy_threshold", FRACTION_OPEN_LOW),
    (TensorPolicy, "min_numel", (-1, 1.5, True)),
    (lambda **kw: DirichletPartitioner(num_clients=4, **{"alpha": 1.0, **kw}), "alpha", POSITIVE_FLOAT),
    (lambda **kw: QuantitySkewPartitioner(num_clients=4, **kw), "sigma", NON_NEGATIVE_FLOAT),
    (IIDPartitioner, "num_clients", POSITIVE_INT),
    (FederatedDataModule, "local_val_fraction", UNIT_HALF_OPEN),
    (FederatedDataModule, "batch_size", POSITIVE_INT),
    (FederatedDataModule, "clients_per_round", POSITIVE_INT),
    (FederatedDataModule, "shuffle", (1, "no")),
    (Digits, "val_fraction", UNIT_HALF_OPEN),
    (MLP, "dropout", UNIT_HALF_OPEN),
    (lambda **kw: Distribution(**{"kind": "uniform", "a": 0.0, "b": 1.0, **kw}), "b", (NAN, INF)),
    (FedGKTModule, "temperature", POSITIVE_FLOAT),
    (FedGKTModule, "alpha", NON_NEGATIVE_FLOAT),
    (FedGKTModule, "server_lr", POSITIVE_FLOAT),
    (FedGKTModule, "server_epochs", POSITIVE_INT),
]


@pytest.mark.parametrize(
    ("factory", "argument", "value"),
    [
        pytest.param(factory, argument, value, id=f"{getattr(factory, '__name__', 'partial')}-{argument}-{value!r}")
        for factory, argument, values in CASES
        for value in values
    ],
)
def test_constructor_refuses_bad_value_naming_the_argument(factory: Factory, argument: str, value: Any) -> None:
    with pytest.raises(FederatedConfigError, match=rf"^{argument} must .*, got {re_escape(value)}$"):
        factory(**{argument: value})


def test_names_given_as_one_string_are_one_name() -> None:
    assert PersonalLayers(modules="head").modules == ["head"]
    assert MaskedRandomNoise(modules="fc1").modules == ["fc1"]
    with pytest.raises(FederatedConfigError, match=r"^modules must name at least one entry, got \[\]$"):
        PersonalLayers(modules=[])
    with pytest.raises(FederatedConfigError, match=r"^modules must be a string or a list of strings, got 3$"):
        PersonalLayers(modules=3)  # type: ignore[arg-type]


def test_partition_report_refuses_non_integer_class_counts() -> None:
    from lightning_fl.datamodules.report import partition_report

    for bad in (NAN, 2.5, True):
        with pytest.raises(FederatedConfigError, match=rf"^num_classes must be an integer, got {re_escape(bad)}$"):
            partition_report([np.array([0])], np.array([0]), num_classes=bad)


def test_small_cnn_refuses_a_layer_without_channels() -> None:
    from lightning_fl.nn import SmallCNN

    with pytest.raises(FederatedConfigError, match=r"^channels must be an integer >= 1, got 0$"):
        SmallCNN(channels=(0, 4))
