"""Error feedback wrapper."""

from __future__ import annotations

import pytest
import torch
from codec_threads import single_thread  # noqa: F401 - fixture

from lightning_fl.codecs import Chain, ErrorFeedback, Identity, RandomHadamard, SignCompressor, TopK
from lightning_fl.exceptions import FederatedConfigError

pytestmark = pytest.mark.usefixtures("single_thread")


def _updates(rounds=30, numel=200):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(numel, generator=gen) + 0.3 for _ in range(rounds)]


@pytest.mark.parametrize("inner", [TopK(0.05), SignCompressor(), Chain(RandomHadamard(), SignCompressor())])
def test_sum_of_decoded_tracks_sum_of_inputs(inner):
    """sum(decoded) == sum(inputs) - last residual; without feedback the dropped mass accumulates."""
    codec = ErrorFeedback(inner)
    updates = _updates()
    decoded = [codec.decode(codec.encode(x, seed=r, key="c0/w")) for r, x in enumerate(updates)]
    total, sent = torch.stack(updates).sum(0), torch.stack(decoded).sum(0)
    torch.testing.assert_close(sent + codec.residuals["c0/w"], total, rtol=0, atol=1e-4)
    plain = torch.stack([inner.decode(inner.encode(x, seed=r)) for r, x in enumerate(updates)]).sum(0)
    assert torch.linalg.vector_norm(sent - total) < 0.5 * torch.linalg.vector_norm(plain - total)


def test_residuals_live_on_cpu_in_float32_per_stream():
    codec = ErrorFeedback(TopK(0.1))
    codec.encode(torch.randn(10, 10, dtype=torch.float16), seed=0, key="c0/w")
    codec.encode(torch.randn(50), seed=0, key="c1/w")
    assert {k: (v.device.type, v.dtype, tuple(v.shape)) for k, v in codec.residuals.items()} == {
        "c0/w": ("cpu", torch.float32, (10, 10)),
        "c1/w": ("cpu", torch.float32, (50,)),
    }
    assert codec.residual_bytes == 4 * 150


def test_state_dict_round_trip_continues_identically():
    updates = _updates(6)
    first = ErrorFeedback(TopK(0.05))
    for r, x in enumerate(updates[:3]):
        first.encode(x, seed=r, key="c0/w")
    state = first.state_dict()
    assert set(state) == {"residuals"} and set(state["residuals"]) == {"c0/w"}
    second = ErrorFeedback(TopK(0.05))
    second.load_state_dict(state)
    for r, x in enumerate(updates[3:], start=3):
        assert first.encode(x, seed=r, key="c0/w").to_bytes() == second.encode(x, seed=r, key="c0/w").to_bytes()


def test_lru_bound_evicts_least_recently_used_stream():
    codec = ErrorFeedback(TopK(0.1), max_streams=2)
    for key in ["a/w", "b/w", "a/w", "c/w"]:
        codec.encode(torch.randn(20), seed=0, key=key)
    assert list(codec.residuals) == ["a/w", "c/w"]
    codec.load_state_dict({"residuals": {k: torch.zeros(3) for k in ["x", "y", "z"]}})
    assert list(codec.residuals) == ["y", "z"]


def test_forget_drops_a_client():
    codec = ErrorFeedback(TopK(0.1))
    for key in ["client1/w", "client1/b", "client10/w", "client2/w"]:
        codec.encode(torch.randn(20), seed=0, key=key)
    codec.forget("client1/")
    assert list(codec.residuals) == ["client10/w", "client2/w"]


def test_payloads_are_the_inner_codecs():
    codec = ErrorFeedback(TopK(k=3))
    payload = codec.encode(torch.randn(30), seed=0, key="c/w")
    assert payload.codec == TopK(k=3).name
    torch.testing.assert_close(TopK(k=3).decode(payload), codec.decode(payload))


def test_needs_a_key_and_a_consistent_shape():
    codec = ErrorFeedback(Identity())
    with pytest.raises(FederatedConfigError, match="key="):
        codec.encode(torch.ones(3), seed=0)
    codec.encode(torch.ones(3), seed=0, key="c/w")
    with pytest.raises(FederatedConfigError, match="had shape"):
        codec.encode(torch.ones(4), seed=0, key="c/w")


@pytest.mark.parametrize("max_streams", [0, -1, 1.5])
def test_bad_bound(max_streams):
    with pytest.raises(FederatedConfigError, match="max_streams"):
        ErrorFeedback(TopK(0.1), max_streams=max_streams)
