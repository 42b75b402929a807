"""Which tensors a codec applies to."""

from __future__ import annotations

import pytest
import torch

from lightning_fl.codecs import Identity, StochasticQuantizer, TensorPolicy
from lightning_fl.exceptions import FederatedConfigError


def test_default_compresses_large_floating_tensors_only():
    policy = TensorPolicy()
    assert policy.select("fc.weight", torch.zeros(32, 32))
    assert not policy.select("fc.bias", torch.zeros(32))
    assert not policy.select("bn.num_batches_tracked", torch.zeros(5000, dtype=torch.int64))
    assert not policy.select("fc.weight", torch.zeros(1023))


def test_include_and_exclude_patterns():
    policy = TensorPolicy(min_numel=0, include=["encoder.*"], exclude=["*.norm.*"])
    assert policy.select("encoder.fc.weight", torch.zeros(4))
    assert not policy.select("decoder.fc.weight", torch.zeros(4))
    assert not policy.select("encoder.norm.weight", torch.zeros(4))


def test_codec_for_falls_back_to_identity():
    policy, codec = TensorPolicy(min_numel=10), StochasticQuantizer(bits=4)
    assert policy.codec_for("w", torch.zeros(10), codec) is codec
    assert isinstance(policy.codec_for("b", torch.zeros(9), codec), Identity)


def test_describe_reports_every_tensor_and_the_share():
    policy = TensorPolicy(min_numel=100, exclude=["head.*"])
    report = policy.describe(
        {
            "body.weight": torch.zeros(20, 10),
            "body.bias": (20,),
            "head.weight": (5, 20),
            "steps": torch.zeros(200, dtype=torch.int64),
        }
    )
    lines = report.splitlines()
    assert lines[0].split() == ["tensor", "shape", "numel", "codec"]
    assert "compressed" in lines[1] and "raw" not in lines[1]
    assert "raw: numel 20 < min_numel 100" in lines[2]
    assert "raw: numel 100 < min_numel 100" not in report and "raw: excluded by 'head.*'" in lines[3]
    assert "raw: not floating (int64)" in lines[4]
    assert lines[-1] == "compressed 1 of 4 tensors, 200 of 520 elements (38.5%)"


def test_bad_min_numel():
    with pytest.raises(FederatedConfigError, match="min_numel"):
        TensorPolicy(min_numel=-1)


def test_a_string_pattern_is_one_pattern_not_its_characters():
    # include="*.weight" used to become the patterns "*", ".", "w", ...: "*" matched every tensor
    policy = TensorPolicy(min_numel=0, include="*.weight", exclude="head.*")
    assert policy.include == ["*.weight"] and policy.exclude == ["head.*"]
    assert policy.select("fc.weight", torch.zeros(4))
    assert not policy.select("fc.bias", torch.zeros(4))
    assert not policy.select("head.weight", torch.zeros(4))
    assert TensorPolicy(min_numel=0, include="*.weight").describe({"fc.bias": (4,)}).count("matches no include") == 1


def test_patterns_that_are_not_strings_are_refused():
    with pytest.raises(FederatedConfigError, match=r"^include must be a string or a list of strings, got \[1\]$"):
        TensorPolicy(include=[1])  # type: ignore[list-item]
    with pytest.raises(FederatedConfigError, match=r"^exclude must not hold an empty string"):
        TensorPolicy(exclude=["*.bias", ""])
