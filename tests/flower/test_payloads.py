"""Payloads on the Flower wire against the simulation's own link: the same bytes and the same decoded tensors, and
error-feedback residuals that survive between rounds in a node's ``context.state`` as they do in the codec."""

from __future__ import annotations

import copy

import pytest
import torch
from flwr.app import RecordDict
from torch import nn

from lightning_fl.codecs import ErrorFeedback, Identity, MagnitudePrune, StochasticQuantizer, TensorPolicy, TopK
from lightning_fl.codecs.untrusted import decode_untrusted
from lightning_fl.exceptions import PayloadError
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.host import FederatedAveraging
from lightning_fl.flower.model_wire import ModelWire
from lightning_fl.flower.node_state import load_codec_state, save_codec_state
from lightning_fl.flower.payloads import STYPE_PREFIX, decode_record, encode_record, payload_budget


def _wire(uplink: object) -> tuple[FlatState, ModelWire, FederatedAveraging]:
    torch.manual_seed(0)
    state = FlatState(nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8)), torch.device("cpu"))
    averaging = FederatedAveraging(uplink=uplink, downlink=StochasticQuantizer(bits=6),  # type: ignore[arg-type]
                                   policy=TensorPolicy(min_numel=8))
    return state, ModelWire(state, averaging), averaging


def test_the_wire_sends_the_bytes_and_tensors_of_the_simulations_link() -> None:
    state, wire, averaging = _wire(TopK(fraction=0.25))
    names, views = [s.name for s in state.float_specs], state.views
    for direction, tensors_wire, link in (("downlink", wire.downlink, averaging.downlink),
                                          ("uplink", wire.uplink, averaging.uplink)):
        record, nbytes = encode_record(tensors_wire, [*views, *state.int_views], seed=3, round_idx=2, client_id=5)
        expected_bytes, expected = link.send(names, views, seed=3, round_idx=2, client_id=5)
        int_bytes = sum(Identity().encode(t, 0).nbytes for t in state.int_views)
        assert nbytes == expected_bytes + int_bytes, direction
        decoded, received_bytes = decode_record(tensors_wire, record)
        assert received_bytes == nbytes
        for got, want in zip(decoded, expected, strict=False):
            assert torch.equal(got, want), direction
        assert all(array.stype.startswith(STYPE_PREFIX) and array.dtype == "uint8" for array in record.values())


def test_error_feedback_residuals_live_in_the_node_state_between_rounds() -> None:
    """Each call starts from an empty codec (a new client process every round): the residuals come back from the node's
    state, and the payloads are those of the simulation's one codec that keeps every client's streams."""
    state, wire, averaging = _wire(ErrorFeedback(TopK(fraction=0.25)))
    reference = copy.deepcopy(averaging.uplink)
    names, codec = [s.name for s in state.float_specs], averaging.uplink.codec
    nodes = {client_id: RecordDict() for client_id in (0, 1)}
    for round_idx in range(3):
        for client_id, node_state in nodes.items():
            update = [torch.randn_like(v) for v in state.views]
            codec.residuals.clear()
            load_codec_state(codec, node_state, "uplink")
            record, _ = encode_record(wire.uplink, [*update, *state.int_views], seed=0, round_idx=round_idx,
                                      client_id=client_id)
            save_codec_state(codec, node_state, "uplink")
            _, expected = reference.send(names, update, seed=0, round_idx=round_idx, client_id=client_id)
            decoded, _ = decode_record(wire.uplink, record)
            for got, want in zip(decoded, expected, strict=False):
                assert torch.equal(got, want), (round_idx, client_id)
    kept = nodes[0].array_records["lightning_fl.codec/uplink/residuals"]
    assert kept.keys() and all(key.startswith("0/") for key in kept)  # a node keeps its own client's streams only


def test_a_payload_of_another_codec_is_refused() -> None:
    state, wire, _ = _wire(StochasticQuantizer(bits=4))
    record, _ = encode_record(wire.uplink, [*state.views, *state.int_views], seed=0, round_idx=0, client_id=0)
    wrong = TopK(fraction=0.5).encode(state.views[0], 0).to_bytes()
    record["0.weight"].data = wrong
    with pytest.raises(PayloadError):
        decode_record(wire.uplink, record)
    del record["0.weight"]
    with pytest.raises(PayloadError, match=r"missing \['0.weight'\]"):
        decode_record(wire.uplink, record)


def test_the_budget_covers_the_dense_tensor_and_padding_codecs() -> None:
    assert payload_budget(Identity(), (100,), torch.float32) >= 4 + 400 + 10
    # bounded by a small multiple of the dense size, whatever the codec
    assert payload_budget(StochasticQuantizer(bits=2), (100,), torch.float32) <= 2 * 400 + 100


def test_the_budget_admits_an_honest_magnitude_prune_payload_with_ties() -> None:
    """Entries tied at the threshold all travel: 700 equal values out of 1000 at density 0.01."""
    codec = MagnitudePrune(density=0.01)
    x = torch.zeros(1000)
    x[:700] = 1.0
    data = codec.encode(x, 0).to_bytes()
    assert len(data) > 4 + 1000 * 4  # more than the dense tensor: the old budget refused it
    assert len(data) <= payload_budget(codec, (1000,), torch.float32)
    assert torch.equal(decode_untrusted(codec, data, (1000,), torch.float32, len(data)), x)
