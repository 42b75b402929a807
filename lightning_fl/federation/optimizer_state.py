"""A client's optimizer starts from the state a new optimizer of its class would have (every client, every chunk)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["reset_state"]

#: Per optimizer class: whether a new optimizer already holds state (Adagrad creates its accumulators at construction).
_EAGER: dict[type, bool] = {}


def reset_state(optimizer: torch.optim.Optimizer) -> None:
    """Give ``optimizer`` the state a new optimizer of its class starts with, for its current parameters: empty for
    most classes, whose state appears at the first step; Adagrad's accumulators filled with
    ``initial_accumulator_value`` (clearing them alone makes its next step fail with ``KeyError: 'sum'``).

    Example:
        >>> w = torch.zeros(2, requires_grad=True)
        >>> opt = torch.optim.Adagrad([w], lr=0.1, initial_accumulator_value=0.5)
        >>> w.grad = torch.ones(2); opt.step(); reset_state(opt)
        >>> opt.state[w]["sum"].tolist(), float(opt.state[w]["step"])
        ([0.5, 0.5], 0.0)
    """
    optimizer.state.clear()
    cls: Any = type(optimizer)
    if _EAGER.get(cls) is False:
        return
    try:  # the same parameters and hyperparameters (Adagrad reads initial_accumulator_value from its arguments)
        fresh = cls(optimizer.param_groups, **optimizer.defaults)
    except TypeError:  # defaults that are not constructor arguments: the groups carry the hyperparameters
        fresh = cls(optimizer.param_groups)
    _EAGER[cls] = bool(fresh.state)
    optimizer.state.update(fresh.state)
