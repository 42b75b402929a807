"""Putting other tensors in place of a module's parameters and buffers for one call (what ``functional_call`` does,
without its per-call traversal of the module: the places are found once per fit)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["TensorSwap"]


class TensorSwap:
    """Swaps the module's tensors named ``names`` (every alias of a tied tensor too) for given ones, and back.

    Args:
        module: The module.
        names: Names of parameters and buffers, as ``named_parameters``/``named_buffers`` give them.

    Example:
        >>> layer = nn.Linear(2, 1, bias=False)
        >>> swap = TensorSwap(layer, ["weight"])
        >>> with swap.swapped([torch.ones(1, 2)]):
        ...     layer(torch.ones(1, 2)).item()
        2.0
        >>> isinstance(layer.weight, nn.Parameter)
        True
    """

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        position: dict[int, int] = {}
        for i, name in enumerate(names):
            owner, _, key = name.rpartition(".")
            sub = module.get_submodule(owner)
            tensor = sub._parameters[key] if key in sub._parameters else sub._buffers[key]
            position[id(tensor)] = i
        self._places: list[tuple[dict[str, torch.Tensor | None], str, int]] = []
        seen: set[tuple[int, str]] = set()
        for _, sub in module.named_modules(remove_duplicate=False):
            for store in (sub._parameters, sub._buffers):
                for key, tensor in store.items():
                    if tensor is not None and id(tensor) in position and (id(store), key) not in seen:
                        seen.add((id(store), key))
                        self._places.append((store, key, position[id(tensor)]))  # type: ignore[arg-type]

    @contextmanager
    def swapped(self, tensors: Sequence[torch.Tensor]) -> Iterator[None]:
        """Within the block the module computes with ``tensors`` (in the order of ``names``)."""
        old = [store[key] for store, key, _ in self._places]
        try:
            for store, key, i in self._places:
                store[key] = tensors[i]
            yield
        finally:
            for (store, key, _), tensor in zip(self._places, old, strict=True):
                store[key] = tensor
