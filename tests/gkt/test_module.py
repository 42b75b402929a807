"""The FedGKT round inside Lightning's Trainer: KD by sample id, no KD in round 0, bytes, evaluation, refusals."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from gkt_setup import NUM_CLASSES, make_dm, make_module, one_thread, trainer
from pytorch_lightning.loggers import CSVLogger

from lightning_fl import FederatedAveraging, FederatedConfigError
from lightning_fl.gkt import FedGKTModule
from lightning_fl.gkt.config import check_gkt_trainer


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


class SpyModule(FedGKTModule):
    """Records, for every client step, the round, whether there was a teacher, and the teacher's agreement."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[dict] = []

    def client_loss(self, logits, labels, teacher, mask):
        loss, kd = super().client_loss(logits, labels, teacher, mask)
        self.calls.append({
            "round": self.trainer.current_epoch,
            "teacher": teacher is not None,
            "agree": None if teacher is None else (teacher.argmax(-1) == labels).all().item(),
            "is_ce": torch.allclose(loss, F.cross_entropy(logits.float(), labels)),
        })
        return loss, kd


class PerfectServer(pl.Callback):
    """After round 0, replace the server's logits by one-hot logits of each sample's own label."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            table = pl_module.teacher
            table.logits = F.one_hot(pl_module._targets, NUM_CLASSES).float() * 20
            table.valid[:] = True


def test_teacher_logits_are_matched_by_sample_id_under_shuffling():
    dm = make_dm(clients_per_round=4, shuffle=True)
    module = make_module(SpyModule)
    trainer(2, callbacks=[PerfectServer()]).fit(module, datamodule=dm)
    # the loader really shuffled: a client's batches are not its samples in index order
    plan = dm.current_plan
    first_client = plan.rank_clients[0]
    own = np.concatenate([b for b, c in zip(plan.batches, plan.batch_client, strict=True) if c == first_client])
    assert not np.array_equal(own, dm.client_indices[first_client])
    round1 = [c for c in module.calls if c["round"] == 1]
    assert round1 and all(c["teacher"] for c in round1)
    assert all(c["agree"] for c in round1), "server logits were matched to the wrong samples"


def test_round_zero_has_no_kd_term_and_later_rounds_do():
    module = make_module(SpyModule)
    trainer(2).fit(module, datamodule=make_dm(clients_per_round=4))
    round0 = [c for c in module.calls if c["round"] == 0]
    round1 = [c for c in module.calls if c["round"] == 1]
    assert round0 and not any(c["teacher"] for c in round0) and all(c["is_ce"] for c in round0)
    assert round1 and all(c["teacher"] for c in round1) and not any(c["is_ce"] for c in round1)
    assert module.history[0]["gkt/client_kd"] == 0.0 and module.history[1]["gkt/client_kd"] > 0.0


def test_server_logits_stored_per_id_are_the_bodys_output_on_that_samples_features():
    dm = make_dm(clients_per_round=2, shuffle=True)
    module = make_module()
    trainer(1).fit(module, datamodule=dm)
    body = module.server_body.eval()
    for client_id in dm.current_plan.clients:
        ids = torch.from_numpy(dm.client_indices[int(client_id)])
        model = module.combined_model(int(client_id)).eval()
        x = dm.train_dataset.tensors[0][ids]
        logits, valid = module.teacher.get(ids)
        assert valid.all()
        torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(logits, body(model.stem(x)), rtol=1e-4, atol=1e-5)
    sent = sum(len(dm.client_indices[int(c)]) for c in dm.current_plan.clients)
    assert int(module.teacher.get(torch.arange(48))[1].sum()) == sent < 48  # only the round's clients got logits


@pytest.mark.parametrize(("feature_dtype", "feature_bytes"), [("float32", 4), ("float16", 2)])
def test_round_bytes_equal_closed_form(feature_dtype, feature_bytes):
    dm = make_dm(clients_per_round=2, local_epochs=2)
    module = make_module(feature_dtype=feature_dtype)
    trainer(2).fit(module, datamodule=dm)
    for round_idx, stats in enumerate(module.history):
        clients = dm.plan_round(round_idx).clients
        n = int(sum(dm.client_sizes[c] for c in clients))
        assert stats["fl/uplink_bytes"] == n * (16 * 8 * 8 * feature_bytes + NUM_CLASSES * 4 + 8 + 8)
        assert stats["fl/downlink_bytes"] == n * NUM_CLASSES * 4
        assert stats["gkt/samples"] == n
    assert module.uplink_bytes_total == sum(h["fl/uplink_bytes"] for h in module.history)
    assert module.history[-1]["fl/uplink_ratio"] == pytest.approx(1.0 if feature_dtype == "float32" else 1.95, 0.03)


def test_client_models_persist_across_rounds_and_stay_apart():
    dm = make_dm(num_clients=4, clients_per_round=2)
    module = make_module()
    starts: dict[tuple[int, int], dict] = {}
    ends: dict[tuple[int, int], dict] = {}

    original_start, original_finish = module._start_client, module._finish_client

    def start(client_id):
        original_start(client_id)
        state = module.client.state_dict()
        starts[(module.trainer.current_epoch, client_id)] = {k: v.clone() for k, v in state.items()}

    def finish(client_id):
        ends[(module.trainer.current_epoch, client_id)] = {k: v.clone() for k, v in module.client.state_dict().items()}
        original_finish(client_id)

    module._start_client, module._finish_client = start, finish  # type: ignore[method-assign]
    trainer(4).fit(module, datamodule=dm)
    last_end: dict[int, dict] = {}
    resumed = 0
    for (round_idx, client_id), state in sorted(starts.items()):
        expected = last_end.get(client_id, module.init_state)
        for name, value in state.items():
            assert torch.equal(value, expected[name]), (round_idx, client_id, name)
        resumed += client_id in last_end
        last_end[client_id] = ends[(round_idx, client_id)]
    assert resumed > 0
    trained = module.store.client_ids()
    assert len(trained) >= 2
    a, b = (module.store.get(c)["model"]["fc.weight"] for c in trained[:2])
    assert not torch.equal(a, b)


def test_validation_logs_combined_and_client_accuracy_per_round(tmp_path):
    dm = make_dm(clients_per_round=2, local_val_fraction=0.25)
    module = make_module(eval_clients="round")
    logger = CSVLogger(tmp_path, name="gkt")
    trainer(3, logger=logger, log_every_n_steps=1).fit(module, datamodule=dm)
    for key in ("val/acc", "val/loss", "gkt/client_acc"):
        assert 0.0 <= float(trainer_metric(module, key)) <= (10.0 if key == "val/loss" else 1.0)
    assert "gkt/client_local_acc" in module.history[0]
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val_steps = [int(r["step"]) for r in rows if r.get("val/acc")]
    byte_steps = [int(r["step"]) for r in rows if r.get("fl/uplink_bytes")]
    assert val_steps == [0, 1, 2] and byte_steps == [0, 1, 2]
    cost = [r for r in rows if r.get("gkt/client_params")]
    assert cost and float(cost[0]["gkt/client_params"]) == module.cost["gkt/client_params"]


def trainer_metric(module, key):
    return module.trainer.callback_metrics[key]


def test_bf16_mixed_precision_runs():
    module = make_module()
    trainer(2, precision="bf16-mixed").fit(module, datamodule=make_dm(clients_per_round=2))
    assert all(np.isfinite(h["gkt/server_loss"]) and np.isfinite(h["gkt/client_loss"]) for h in module.history)
    assert module.teacher.logits.dtype == torch.float32


def test_federated_averaging_beside_fedgkt_is_refused():
    with pytest.raises(FederatedConfigError, match="cannot be combined with FederatedAveraging"):
        trainer(1, callbacks=[FederatedAveraging()]).fit(make_module(), datamodule=make_dm())


def test_several_processes_are_refused():
    fake = SimpleNamespace(world_size=2, callbacks=[])
    with pytest.raises(FederatedConfigError, match=r"needs devices=1 .* got world_size=2"):
        check_gkt_trainer(fake)  # type: ignore[arg-type]


def test_a_reload_flag_other_than_every_round_is_refused():
    # issue 12: 0 (Lightning's default) is set to 1 by the runtime; only a conflicting value is refused
    with pytest.raises(FederatedConfigError, match=r"reload_dataloaders_every_n_epochs must be 1 .*got 2"):
        trainer(1, reload_dataloaders_every_n_epochs=2).fit(make_module(), datamodule=make_dm())


@pytest.mark.parametrize(("name", "value", "match"), [
    ("alpha", -1.0, "alpha must be a finite number >= 0, got -1.0"),
    ("temperature", 0.0, "temperature must be a finite number > 0, got 0.0"),
    ("server_epochs", 0, "server_epochs must be an integer >= 1, got 0"),
    ("optimizer", "rmsprop", r"optimizer must be one of \['adam', 'sgd'\], got 'rmsprop'"),
    ("eval_clients", "all", r"eval_clients must be one of \['round', 'first'\], got 'all'"),
])
def test_bad_arguments_are_refused(name, value, match):
    with pytest.raises(FederatedConfigError, match=match):
        FedGKTModule(**{name: value})


def test_first_client_evaluation_and_fresh_client_optimizers():
    module = make_module(eval_clients="first", keep_client_optimizer_state=False, optimizer="sgd")
    trainer(2).fit(module, datamodule=make_dm(clients_per_round=2))
    metrics = module.trainer.callback_metrics
    assert metrics["gkt/client_acc_min"] == metrics["gkt/client_acc_max"] == metrics["gkt/client_acc"]
    assert all(module.store.get(c)["optimizer"] is None for c in module.store.client_ids())
