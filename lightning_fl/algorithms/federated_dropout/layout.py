"""The server's side of Federated Dropout: a client's submodel as a small flat vector, cut from the global one and
scattered back.

A client's submodel has the global state's tensors, in the same order, with smaller shapes (:class:`SubmodelLayout`).
One index vector per client (the positions, in the global flat vector, of the entries the client holds) turns the
global model into the client's with one ``index_select`` and the client's update into a full-size update with one
``index_copy_``; the same positions mark which coordinates the client held, so the aggregate divides each
coordinate by the weight of the clients that held it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch

from lightning_fl.algorithms.federated_dropout.submodel import ShrunkModule, SubmodelPlan
from lightning_fl.federation.flat import FlatState, TensorSpec
from lightning_fl.federation.layout import SEED_BYTES
from lightning_fl.seeding import generator

__all__ = ["SEED_BYTES", "ClientSubmodels", "Per", "SubmodelLayout"]

Per = Literal["client", "round"]



class SubmodelLayout:
    """The flat layout of a submodel of ``state``: each tensor at its submodel shape, packed like ``state.flat``.

    Example:
        >>> from torch import nn
        >>> from lightning_fl.algorithms.federated_dropout.groups import DropoutGroup
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> state = FlatState(net, torch.device("cpu"))
        >>> plan = SubmodelPlan(net, [DropoutGroup(8, ["0.weight:0", "0.bias:0", "2.weight:1"])], keep=0.5)
        >>> layout = SubmodelLayout(state, plan)
        >>> state.numel, layout.numel, [tuple(s.shape) for s in layout.float_specs]
        (58, 30, [(4, 4), (4,), (2, 4), (2,)])
    """

    def __init__(self, state: FlatState, plan: SubmodelPlan) -> None:
        self.state = state
        self.plan = plan
        self.float_specs: list[TensorSpec] = []
        offset = 0
        for spec in state.float_specs:
            shape = plan.small_shape(spec.name) if spec.name in plan.dims else spec.shape
            numel = shape.numel()
            self.float_specs.append(TensorSpec(spec.name, shape, offset, numel, spec.is_parameter))
            offset += numel
        self.numel = offset

    def make_views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-tensor views into a vector laid out like a submodel."""
        return [flat[s.offset : s.offset + s.numel].view(s.shape) for s in self.float_specs]

    def new_flat(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A zero vector laid out like a submodel, with its views."""
        flat = torch.zeros(self.numel, dtype=self.state.flat.dtype, device=self.state.device)
        return flat, self.make_views(flat)

    def flat_index(self, kept: Sequence[torch.Tensor]) -> torch.Tensor:
        """Positions in the global flat vector of a submodel's entries, in submodel order."""
        parts = []
        for full in self.state.float_specs:
            if full.name in self.plan.dims:
                parts.append(self.plan.tensor_index(full.name, kept) + full.offset)
            else:
                parts.append(torch.arange(full.offset, full.offset + full.numel))
        return torch.cat(parts).to(self.state.device) if parts else torch.zeros(0, dtype=torch.int64)


class ClientSubmodels:
    """Which submodel each client of a round trains, and the moves between it and the global model: the runtime's
    :class:`~lightning_fl.federation.layout.ClientLayout` for Federated Dropout.

    Args:
        state: The global state.
        plan: The submodel shapes.
        tensors: The module's tensors by name (those the plan shrinks).
        seed: The federated seed; kept units are drawn from ``(seed, "federated_dropout", round[, client])``.
        per: ``"client"``: every client draws its own units; ``"round"``: all clients of a round share them.
    """

    #: Clients hold different coordinates: the server weighs each coordinate by the clients that held it.
    per_coordinate = True
    #: The seed that tells a client which units it keeps travels with its model.
    downlink_extra_bytes = SEED_BYTES

    def __init__(
        self, state: FlatState, plan: SubmodelPlan, tensors: dict[str, torch.Tensor], seed: int, per: Per
    ) -> None:
        self.layout = SubmodelLayout(state, plan)
        in_state = {s.name for s in state.float_specs}
        self.module = ShrunkModule(plan, tensors, frozen=[n for n in plan.names if n not in in_state])
        self.plan = plan
        self.seed = seed
        self.per = per
        self._kept: list[torch.Tensor] | None = None
        self._cache: tuple[tuple[int, int], torch.Tensor] | None = None

    @property
    def numel(self) -> int:
        """Entries of a client's submodel as a flat vector."""
        return self.layout.numel

    def new_flat(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A zero vector laid out like a client's submodel, with its views."""
        return self.layout.new_flat()

    def select(self, round_idx: int, client_id: int) -> torch.Tensor:
        """Draw the client's kept units; returns their positions in the global flat vector."""
        key = (round_idx, client_id if self.per == "client" else -1)
        if self._cache is None or self._cache[0] != key:
            gen = generator(self.seed, "federated_dropout", *key)
            self._kept = self.plan.choose(gen)
            self._cache = (key, self.layout.flat_index(self._kept))
        return self._cache[1]

    @torch.no_grad()
    def gather(self, full: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> None:
        """``out`` = the submodel's entries of the flat vector ``full``."""
        torch.index_select(full, 0, index, out=out)

    @torch.no_grad()
    def scatter(self, small: torch.Tensor, index: torch.Tensor, out: torch.Tensor, coverage: torch.Tensor) -> None:
        """``out`` = ``small`` at the submodel's positions, zero elsewhere; ``coverage`` = 1 there, 0 elsewhere."""
        out.zero_().index_copy_(0, index, small)
        coverage.zero_().index_fill_(0, index, 1.0)

    @property
    def kept(self) -> list[torch.Tensor]:
        """The kept units of every group of the client last selected."""
        assert self._kept is not None, "select() a client first"
        return self._kept

    def shrink(self) -> None:
        """Make the module the submodel last selected (values are written by the caller)."""
        assert self._kept is not None, "select() a client before shrinking the module"
        self.module.shrink(self._kept)

    def restore(self) -> None:
        """Make the module full-size again, holding the values it had before :meth:`shrink`."""
        self.module.restore()

    @contextmanager
    def applied(self, round_idx: int, client_id: int) -> Iterator[None]:
        """The module shrunk to ``client_id``'s submodel of ``round_idx`` for the ``with`` block (values kept)."""
        self.select(round_idx, client_id)
        with self.module.applied(self.kept):
            yield
