"""Per-client state store, the sample-id logit table, and the bytes each message takes."""

from __future__ import annotations

import pytest
import torch

from lightning_fl import FederatedConfigError
from lightning_fl.codecs import Float16, StochasticQuantizer
from lightning_fl.gkt import ClientStateStore, FeatureLink, SampleLogitTable
from lightning_fl.gkt.transfer import make_upload


def test_store_copies_to_cpu_and_spills_beyond_max_resident(tmp_path):
    store = ClientStateStore(max_resident=2, spill_dir=str(tmp_path))
    w = torch.ones(3)
    for c in range(4):
        store.put(c, {"model": {"w": w * c}})
    w.zero_()  # the store holds copies
    assert len(store) == 4 and store.client_ids() == [0, 1, 2, 3]
    (folder,) = tmp_path.iterdir()  # a private folder per store
    assert sorted(p.name for p in folder.iterdir()) == ["client_0.pt", "client_1.pt"]
    assert store.resident_nbytes == 2 * 12
    for c in range(4):
        assert store.get(c)["model"]["w"].tolist() == [float(c)] * 3
    assert store.get(9) is None
    saved = store.state_dict()
    fresh = ClientStateStore()
    fresh.load_state_dict(saved)
    assert [fresh.get(c)["model"]["w"][0].item() for c in range(4)] == [0.0, 1.0, 2.0, 3.0]
    del store
    assert not folder.exists()  # removed with its store


def test_store_arguments_are_checked():
    with pytest.raises(FederatedConfigError, match="spill_dir is required with max_resident=2"):
        ClientStateStore(max_resident=2)
    with pytest.raises(FederatedConfigError, match="max_resident must be an integer >= 1, got 0"):
        ClientStateStore(max_resident=0, spill_dir=".")


def test_logit_table_is_keyed_by_sample_id():
    table = SampleLogitTable(6, 2)
    table.put(torch.tensor([5, 0, 3]), torch.tensor([[5.0, 5.0], [0.0, 0.0], [3.0, 3.0]]))
    logits, valid = table.get(torch.tensor([3, 5, 1]))
    assert logits[:, 0].tolist() == [3.0, 5.0, 0.0] and valid.tolist() == [True, True, False]
    other = SampleLogitTable(7, 2)
    with pytest.raises(FederatedConfigError, match=r"shape \(6, 2\), this run needs \(7, 2\)"):
        other.load_state_dict(table.state_dict())


@pytest.mark.parametrize(("dtype", "feature_bytes"), [("float32", 4), ("float16", 2)])
def test_upload_bytes_equal_closed_form(dtype, feature_bytes):
    n, classes, size = 7, 10, 8
    up = make_upload(3, torch.arange(n), torch.randn(n, 16, size, size), torch.randn(n, classes),
                     torch.zeros(n, dtype=torch.long), FeatureLink(dtype), seed=0)
    assert up.nbytes == n * (16 * size * size * feature_bytes + classes * 4 + 8 + 8)
    assert up.features.dtype == getattr(torch, dtype)


def test_float16_features_saturate_instead_of_overflowing():
    received, _ = FeatureLink("float16").send(torch.tensor([1e6, -1e6, 1.5]), seed=0)
    assert torch.isfinite(received).all() and received[2].item() == 1.5


def test_feature_codec_counts_payload_bytes():
    x = torch.randn(4, 16, 8, 8)
    received, nbytes = FeatureLink(codec=Float16()).send(x, seed=0)
    assert received.dtype == torch.float32 and received.shape == x.shape
    payload = Float16().encode(x, seed=0)
    assert nbytes == payload.nbytes > x.numel() * 2
    _, q_bytes = FeatureLink(codec=StochasticQuantizer(bits=4)).send(x, seed=0)
    assert q_bytes < x.numel() // 2 + 100


def test_feature_link_arguments_are_checked():
    with pytest.raises(FederatedConfigError, match="feature_dtype must be one of \\['float32', 'float16'\\]"):
        FeatureLink("bfloat16")  # type: ignore[arg-type]
    with pytest.raises(FederatedConfigError, match="feature_dtype must be 'float32', got 'float16'"):
        FeatureLink("float16", Float16())
