"""What vectorized cohorts cannot train is refused with an error naming it and the sequential mode."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import TinyClassifier, quiet_trainer_kwargs
from torchmetrics import MeanMetric
from vectorized_helpers import assert_same_state, fit, make_dm

from lightning_fl import FederatedAveraging, FederatedConfigError, FederatedRuntimeError
from lightning_fl.algorithms.malicious import MaliciousClients
from lightning_fl.datamodules.plan import PlanRequest
from lightning_fl.federation.algorithm import FederatedAlgorithm
from lightning_fl.federation.cohort_checks import check_vectorizable
from lightning_fl.nn import SmallCNN


class ItemLoss(TinyClassifier):
    """Reads a tensor's value into Python: vmap cannot run it."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if loss.item() > 1e6:
            raise AssertionError("diverged")
        return loss


def test_item_in_training_step_gets_the_clear_error_and_the_module_is_left_as_it_was():
    model = ItemLoss()
    trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=1, callbacks=[FederatedAveraging(vectorize=True)],
                                                precision="64-true"))
    with pytest.raises(FederatedRuntimeError, match=r"could not run ItemLoss.training_step under torch.func.vmap: "
                                                    r"vmap: It looks like you're calling .item\(\).*vectorize=False"):
        trainer.fit(model, datamodule=make_dm())
    assert "training_step" not in vars(model) and "log" not in vars(model)  # the module's own methods again
    assert all(isinstance(p, torch.nn.Parameter) for p in trainer.optimizers[0].param_groups[0]["params"])


class Branches(TinyClassifier):
    """Python control flow on a tensor's value."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * 2 if loss > 100 else loss


class CountsInPlace(TinyClassifier):
    """An in-place update of a tensor that is neither a parameter nor a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = torch.zeros((), dtype=torch.float64)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.seen += loss.detach()
        return loss


@pytest.mark.parametrize("model_fn", [Branches, CountsInPlace])
def test_other_vmap_failures_get_the_clear_error(model_fn):
    with pytest.raises(FederatedRuntimeError, match=f"could not run {model_fn.__name__}.training_step under "
                                                    "torch.func.vmap: .*vectorize=False"):
        fit(True, model_fn, rounds=1)


def test_auto_falls_back_to_sequential_when_vmap_fails_and_says_so():
    with pytest.warns(UserWarning, match="vectorize='auto': training clients one after another.*ItemLoss"):
        _, fedavg = fit("auto", ItemLoss, rounds=1)
    assert not fedavg.vectorized and fedavg.plan_request().cohort_size is None


class Conv(TinyClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.conv = SmallCNN(1, 3, image_size=8, channels=(2, 2))  # present, unused: "auto" looks at the layers


def test_auto_picks_vectorized_for_an_mlp_and_sequential_for_convolutions_on_cpu(caplog):
    auto_model, mlp = fit("auto", rounds=1)
    _, conv = fit("auto", Conv, rounds=1)
    assert mlp.vectorized and not conv.vectorized
    assert_same_state(auto_model, fit(True, rounds=1)[0], atol=0)  # the trial step at fit start leaves no trace
    assert "convolutions" in caplog.text and "vectorized" in caplog.text


class Manual(TinyClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        optimizer.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(super().training_step(batch, batch_idx))
        optimizer.step()  # type: ignore[union-attr]


class LBFGS(TinyClassifier):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.LBFGS(self.parameters())


class ReturnsNone(TinyClassifier):
    def training_step(self, batch: Any, batch_idx: int) -> None:
        return None


class LogsMetric(TinyClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.mean = MeanMetric()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("metric", self.mean)
        return loss


class ClipsItsOwnGradients(TinyClassifier):
    """Clips its own parameters' gradients in a hook: in vectorized mode they would have none (silently no clip)."""

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        torch.nn.utils.clip_grad_norm_(self.parameters(), 1e-3)


class OutOfMemory(TinyClassifier):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")


def test_out_of_memory_is_not_reported_as_a_vmap_failure():
    with pytest.raises(torch.OutOfMemoryError, match="out of memory"):
        fit(True, OutOfMemory, rounds=1)


@pytest.mark.parametrize(("model_fn", "kwargs", "error", "match"), [
    (ClipsItsOwnGradients, {}, FederatedConfigError,
     "ClipsItsOwnGradients's own on_before_optimizer_step would see no gradients"),
    (Manual, {}, FederatedConfigError, "automatic optimization, but Manual.automatic_optimization is False"),
    (LBFGS, {}, FederatedConfigError, r"must be elementwise \(SGD, Adam, AdamW, .*\), got LBFGS"),
    (TinyClassifier, {"gradient_clip_val": 1.0}, FederatedConfigError, "gradient_clip_val=1.0"),
    (ReturnsNone, {}, FederatedRuntimeError, "ReturnsNone.training_step to return the loss.*got NoneType"),
    (LogsMetric, {}, FederatedRuntimeError, "got MeanMetric for 'metric'"),
])
def test_refusals_name_what_and_the_sequential_mode(model_fn, kwargs, error, match):
    with pytest.raises(error, match=f"{match}.*vectorize=False"):
        fit(True, model_fn, rounds=1, **kwargs)


class StepHook(FederatedAlgorithm):
    def on_before_optimizer_step(self, *args: Any) -> None:
        pass


class StepHookWithCohorts(StepHook):
    def on_before_cohort_step(self, cohort: Any) -> None:
        pass


class Declines(FederatedAlgorithm):
    supports_cohorts = False


class KeepsTheCurrentClient(FederatedAlgorithm):
    """Remembers 'the current client' at its start and reads it at its update: wrong when a chunk's clients all start
    before any of them ends."""

    def on_client_start(self, client: Any) -> None:
        self.current = client.client_id

    def on_client_update(self, client: Any, update: Any, views: Any) -> None:
        assert self.current == client.client_id


class KeysByClient(KeepsTheCurrentClient):
    supports_cohorts = True


def trainer_like(**overrides: Any) -> Any:
    values = {"optimizers": [], "gradient_clip_val": None, "precision": "32-true"}
    return SimpleNamespace(**{**values, **overrides})


@pytest.mark.parametrize(("algorithm", "match"), [
    (StepHook(), "StepHook overrides on_before_optimizer_step, .* but not on_before_cohort_step"),
    (Declines(), "Declines declares supports_cohorts = False"),
    (MaliciousClients(attack="label_flip"), "MaliciousClients declares supports_cohorts = False"),
    (KeepsTheCurrentClient(), "KeepsTheCurrentClient overrides on_client_start and on_client_update.*client_id"),
])
def test_algorithms_without_cohort_support_are_refused(algorithm, match):
    with pytest.raises(FederatedConfigError, match=f"{match}.*vectorize=False"):
        check_vectorizable(trainer_like(), TinyClassifier(), [algorithm])
    check_vectorizable(trainer_like(), TinyClassifier(), [StepHookWithCohorts()])  # declares how it acts on chunks
    check_vectorizable(trainer_like(), TinyClassifier(), [MaliciousClients(attack="sign_flip")])  # update attacks run
    check_vectorizable(trainer_like(), TinyClassifier(), [KeysByClient()])  # declares its state is keyed by client


class RunsOwnRounds(TinyClassifier):
    def plan_request(self) -> PlanRequest:
        return PlanRequest()


@pytest.mark.parametrize(("trainer", "module", "match"), [
    (trainer_like(precision="16-mixed"), TinyClassifier(), "precision='16-mixed' .*one loss scale"),
    (trainer_like(), RunsOwnRounds(), "does not support RunsOwnRounds, which runs its own rounds"),
])
def test_half_precision_and_modules_running_their_own_rounds_are_refused(trainer, module, match):
    with pytest.raises(FederatedConfigError, match=f"{match}.*vectorize=False"):
        check_vectorizable(trainer, module, [])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"vectorize": "yes"}, "vectorize must be True, False or 'auto', got 'yes'"),
    ({"max_parallel_clients": 0}, "max_parallel_clients"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(FederatedConfigError, match=match):
        FederatedAveraging(**kwargs)
