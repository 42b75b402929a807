"""What vectorized cohorts (``FederatedAveraging(vectorize=True)``) can train, checked at fit start.

Every refusal names what is refused, why a chunk of clients stepping together cannot run it, and says to train with
``FederatedAveraging(vectorize=False)``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from lightning_fl.datamodules.plan import RoundDriver
from lightning_fl.exceptions import FederatedConfigError
from lightning_fl.federation.algorithm import FederatedAlgorithm

__all__ = ["ELEMENTWISE_OPTIMIZERS", "PER_STEP_HOOKS", "check_vectorizable", "has_convolutions"]

#: Optimizers whose update of an entry depends on that entry's gradient and state only: stepped on stacked tensors,
#: every client gets exactly its own step and its own state.
ELEMENTWISE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad,
    torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam,
)

#: Lightning hooks that act on one client's optimizer steps: an algorithm overriding one must also implement
#: ``on_before_cohort_step`` (or declare ``supports_cohorts = True``) to run in vectorized mode.
PER_STEP_HOOKS = ("on_before_optimizer_step", "on_after_backward", "on_before_backward", "on_train_batch_start",
                  "on_train_batch_end", "on_before_zero_grad", "optimizer_step")

#: LightningModule hooks that read or change the module's own parameters' gradients: in vectorized mode the optimizer
#: steps stacked copies, so the module's parameters have no gradients there and such a hook would silently do nothing.
MODULE_GRADIENT_HOOKS = ("on_before_optimizer_step", "on_after_backward", "on_before_backward",
                         "configure_gradient_clipping", "on_before_zero_grad")

_FIX = "train with FederatedAveraging(vectorize=False)"


def has_convolutions(module: nn.Module) -> bool:
    """Whether ``module`` holds a convolution (vmapped convolutions are slow on CPUs).

    Example:
        >>> has_convolutions(nn.Sequential(nn.Conv2d(1, 2, 3))), has_convolutions(nn.Linear(2, 2))
        (True, False)
    """
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def check_vectorizable(trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                       algorithms: list[FederatedAlgorithm]) -> None:
    """Refuse, before the first round, what a chunk of clients trained at once would get wrong.

    Raises:
        FederatedConfigError: Manual optimization, a module that runs its own rounds (FedGKT), an optimizer that
            is not elementwise, ``gradient_clip_val`` (a global norm couples the clients), ``16-mixed`` precision
            (one loss scale for all clients), or an algorithm that does not support cohorts.
    """
    name = type(pl_module).__name__
    if not pl_module.automatic_optimization:
        raise FederatedConfigError(
            f"vectorize needs automatic optimization, but {name}.automatic_optimization is False (a manual "
            f"training_step steps its optimizers itself, once per client); {_FIX}"
        )
    if isinstance(pl_module, RoundDriver):
        raise FederatedConfigError(f"vectorize does not support {name}, which runs its own rounds; {_FIX}")
    for optimizer in trainer.optimizers:
        if type(optimizer) not in ELEMENTWISE_OPTIMIZERS:
            allowed = ", ".join(o.__name__ for o in ELEMENTWISE_OPTIMIZERS)
            raise FederatedConfigError(
                f"vectorize steps the clients' stacked weights with the module's optimizer, which must be "
                f"elementwise ({allowed}), got {type(optimizer).__name__}; {_FIX}"
            )
    if trainer.gradient_clip_val:
        raise FederatedConfigError(
            f"vectorize does not support gradient_clip_val (clipping by the norm of all gradients would couple the "
            f"clients trained at once), got gradient_clip_val={trainer.gradient_clip_val}; {_FIX}"
        )
    precision = str(trainer.precision)
    if precision == "16-mixed":  # 16-true has no loss scale
        raise FederatedConfigError(
            f"vectorize does not support precision={precision!r} (one loss scale for all clients would skip every "
            f"client's step when one overflows); use precision='bf16-mixed' or '32-true', or {_FIX}"
        )
    hooks = [h for h in MODULE_GRADIENT_HOOKS if _overrides_lightning(type(pl_module), h)]
    if hooks:
        raise FederatedConfigError(
            f"vectorize trains stacked copies of the parameters, so {name}'s own {', '.join(hooks)} would see no "
            f"gradients of its parameters and silently do nothing; {_FIX}"
        )
    for algorithm in algorithms:
        _check_algorithm(algorithm)


def _overrides_lightning(cls: type, hook: str) -> bool:
    """Whether ``cls`` defines ``hook`` itself rather than inheriting Lightning's (either namespace)."""
    fn = getattr(cls, hook, None)
    module = getattr(fn, "__module__", "") or ""
    return fn is not None and not module.startswith(("pytorch_lightning.", "lightning."))


def _check_algorithm(algorithm: FederatedAlgorithm) -> None:
    name = type(algorithm).__name__
    if algorithm.supports_cohorts is False:
        raise FederatedConfigError(f"{name} declares supports_cohorts = False: it cannot run with vectorize; {_FIX}")
    if algorithm.supports_cohorts is None:
        cls = type(algorithm)
        overridden = [h for h in PER_STEP_HOOKS if getattr(cls, h, None) is not getattr(FederatedAlgorithm, h, None)]
        if overridden and cls.on_before_cohort_step is FederatedAlgorithm.on_before_cohort_step:
            raise FederatedConfigError(
                f"{name} overrides {', '.join(overridden)}, which acts on one client's optimizer steps, but not "
                f"on_before_cohort_step, so it cannot act on a chunk of clients trained at once; {_FIX}"
            )
        later = [h for h in ("on_client_update", "client_weight", "on_before_cohort_step")
                 if getattr(cls, h) is not getattr(FederatedAlgorithm, h)]
        if cls.on_client_start is not FederatedAlgorithm.on_client_start and later:
            raise FederatedConfigError(
                f"{name} overrides on_client_start and {', '.join(later)}: in vectorized mode every client of a chunk "
                f"starts before any of them ends, so state kept for 'the current client' would be another client's. "
                f"Key per-client state by client.client_id and declare supports_cohorts = True, or {_FIX}"
            )
