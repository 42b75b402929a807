"""Personal layers and FedBN never leave the client; personalized evaluation measures without changing training."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, make_tiny_data, quiet_trainer_kwargs
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from lightning_fl import (
    FedBN,
    FederatedAlgorithm,
    FederatedAveraging,
    FederatedConfigError,
    FederatedDataModule,
    PersonalizedEvaluation,
    PersonalLayers,
)
from lightning_fl.codecs import Identity
from lightning_fl.datamodules import IIDPartitioner

ROUNDS, CLIENTS, PER_ROUND = 3, 6, 3


def make_dm(local_val_fraction: float = 0.0, seed: int = 2) -> FederatedDataModule:
    # 150 samples, 25 per client (20 after a 0.2 local split), batches of 10: no 1-sample batch for BatchNorm
    return FederatedDataModule(make_tiny_data(150, seed=0), make_tiny_data(60, seed=1),
                               partitioner=IIDPartitioner(num_clients=CLIENTS, seed=0), clients_per_round=PER_ROUND,
                               batch_size=10, local_val_fraction=local_val_fraction, seed=seed)


class Recorder(FederatedAlgorithm):
    """Records the named module tensors each client starts and ends with (runs after the other algorithms)."""

    order = 100

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.starts, self.ends = prefix, [], []

    def _grab(self):
        module = self.context.state
        return [t.detach().clone() for s, t in zip(module.float_specs, module.module_float, strict=True)
                if s.name.startswith(self.prefix)]

    def on_client_start(self, client):
        self.starts.append((client.round_idx, client.client_id, self._grab()))

    def on_client_update(self, client, update, views):
        self.ends.append((client.round_idx, client.client_id, self._grab()))


def fit(callbacks, batchnorm=False, rounds=ROUNDS, dm=None, model_class=None, **trainer_kwargs):
    torch.manual_seed(0)
    model = model_class() if model_class is not None else TinyClassifier(batchnorm=batchnorm)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    dm = dm if dm is not None else make_dm()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=rounds, callbacks=callbacks, **trainer_kwargs))
    trainer.fit(model, datamodule=dm)
    return model, init


def raw_bytes(tensors) -> int:
    return sum(Identity().encode(t, 0).nbytes for t in tensors)


def test_personal_layers_never_leave_the_client():
    plain = FederatedAveraging()
    fit([plain])
    fedavg, recorder = FederatedAveraging(), Recorder("net.2.")
    model, init = fit([fedavg, PersonalLayers(["net.2"]), recorder])
    head = [model.net[2].weight, model.net[2].bias]
    # the bytes: every client update and every download is smaller by exactly the head's raw payload
    updates = ROUNDS * PER_ROUND
    assert fedavg.uplink_bytes_total == plain.uplink_bytes_total - updates * raw_bytes(head)
    assert fedavg.downlink_bytes_total == plain.downlink_bytes_total - updates * raw_bytes(head)
    # the global state: the head is never averaged (still its initial weights), the body is
    assert torch.equal(model.net[2].weight, init["net.2.weight"]) and torch.equal(model.net[2].bias, init["net.2.bias"])
    assert not torch.equal(model.net[0].weight, init["net.0.weight"])
    # each client's head persists: it starts a round with the head it ended its previous round with
    last_end = {}
    resumed = 0
    for (r, c, start), (r2, c2, end) in zip(recorder.starts, recorder.ends, strict=True):
        assert (r, c) == (r2, c2)
        if c in last_end:
            assert all(torch.equal(a, b) for a, b in zip(start, last_end[c], strict=True))
            resumed += 1
        else:
            assert all(torch.equal(a, b) for a, b in zip(start, head, strict=True))
        last_end[c] = end
    assert resumed > 0
    heads = [end[0] for end in last_end.values()]
    assert len(heads) > 1 and not torch.equal(heads[0], heads[1])  # every client has its own head


def test_fedbn_keeps_batchnorm_local():
    plain = FederatedAveraging()
    fit([plain], batchnorm=True)
    fedavg, fedbn = FederatedAveraging(), FedBN()
    model, init = fit([fedavg, fedbn], batchnorm=True)
    assert fedbn.modules == ["net.1"]
    bn = model.net[1]
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(bn, name), init[f"net.1.{name}"]), name
    assert not torch.equal(model.net[0].weight, init["net.0.weight"])
    bn_tensors = [bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked]
    assert fedavg.uplink_bytes_total == plain.uplink_bytes_total - ROUNDS * PER_ROUND * raw_bytes(bn_tensors)
    stored = dict(fedbn.client_tensors.items())
    assert len(stored) > 1 and all(int(t[-1]) > 0 for t in stored.values())  # each client's own batch count
    assert fedbn.bytes_per_client == 4 * (16 * 4) + 8


def run_for_resume(tmp_path, max_epochs, ckpt_path=None):
    torch.manual_seed(0)
    model, layers = TinyClassifier(), PersonalLayers(["net.2"])
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="round{epoch}",
                           auto_insert_metric_name=False)
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=max_epochs, enable_checkpointing=True,
                                                callbacks=[FederatedAveraging(), layers, ckpt]))
    trainer.fit(model, datamodule=make_dm(), ckpt_path=ckpt_path)
    return model, layers


def test_resume_is_bit_identical(tmp_path):
    full_model, full = run_for_resume(tmp_path / "full", 5)
    run_for_resume(tmp_path / "part", 2)
    resumed_model, resumed = run_for_resume(tmp_path / "resumed", 5, str(tmp_path / "part" / "round1.ckpt"))
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [c for c, _ in full.client_tensors.items()] == [c for c, _ in resumed.client_tensors.items()]
    for (_, a), (_, b) in zip(full.client_tensors.items(), resumed.client_tensors.items(), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_unknown_module_names_are_refused():
    with pytest.raises(FederatedConfigError, match=r"modules must name modules of the LightningModule .*got unknown"):
        fit([FederatedAveraging(), PersonalLayers(["head"])], rounds=1)
    assert PersonalLayers("net.2").modules == ["net.2"]  # one string is one module name, not its characters
    with pytest.raises(FederatedConfigError, match=r"modules must name at least one entry, got \[\]"):
        PersonalLayers([])
    with pytest.raises(FederatedConfigError, match="FedBN needs BatchNorm layers in the model, got none"):
        fit([FederatedAveraging(), FedBN()], rounds=1)


class DropoutClassifier(TinyClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def test_personalized_evaluation_does_not_change_training():
    plain, _ = fit([FederatedAveraging()], dm=make_dm(0.2), model_class=DropoutClassifier)
    evaluation = PersonalizedEvaluation(every_n_rounds=2, finetune_steps=3)
    fedavg = FederatedAveraging()
    with_eval, _ = fit([fedavg, evaluation], dm=make_dm(0.2), model_class=DropoutClassifier)
    for a, b in zip(plain.state_dict().values(), with_eval.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["round"] for h in evaluation.history] == [1.0, 2.0]  # every 2nd round, and the last
    assert [("personal/acc" in h) for h in fedavg.history] == [False, True, True]
    assert evaluation.client_accuracy.shape == (CLIENTS,)
    assert fedavg.history[-1]["personal/acc"] == pytest.approx(float(np.mean(evaluation.client_accuracy)))


def test_zero_finetune_steps_scores_the_global_model_on_each_clients_split(tmp_path):
    evaluation = PersonalizedEvaluation(every_n_rounds=1, finetune_steps=0)
    dm = make_dm(0.2)
    logger = TensorBoardLogger(tmp_path, name="run")
    model, _ = fit([FederatedAveraging(), evaluation], dm=dm, rounds=2, logger=logger)
    model.eval()
    x, y = dm.train_dataset.tensors
    expected = [float((model(x[ix]).argmax(-1) == y[ix]).float().mean()) for ix in dm.client_val_indices]
    np.testing.assert_allclose(evaluation.client_accuracy, expected, rtol=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir, size_guidance={"histograms": 0})
    events.Reload()
    assert "personal/acc" in events.Tags()["histograms"]
    assert "personal/acc" in events.Tags()["scalars"]


def test_personalized_evaluation_needs_local_splits():
    with pytest.raises(FederatedConfigError, match=r"local_val_fraction=\.\.\.\) must be > 0, got 0\.0"):
        fit([FederatedAveraging(), PersonalizedEvaluation()], rounds=1)
    with pytest.raises(FederatedConfigError, match="finetune_steps must be an integer >= 0, got -1"):
        PersonalizedEvaluation(finetune_steps=-1)
