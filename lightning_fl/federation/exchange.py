"""The exchange between the server and one client: the model the client downloads and starts from, and the update
it sends back, with the payload bytes of both."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from lightning_fl.codecs.base import Codec
from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.layout import ClientLayout
from lightning_fl.federation.link import Link
from lightning_fl.federation.wire import WireSelection


class ClientExchange:
    """Moves the model to one client at a time and its update back, through the two links.

    Buffers are allocated once, in the layout a client holds (:class:`~lightning_fl.federation.layout.ClientLayout`):
    the whole model's, or a submodel's when Federated Dropout gives clients one. :meth:`download` puts the client's
    starting weights into the module, :meth:`update` is the client's update ``w_client - w_start`` afterwards
    (algorithms may change it in place), :meth:`upload` sends it and returns what the server aggregates, at full
    size.

    Args:
        state: The global state (the module's tensors by reference).
        wire: Which tensors are shared (sent, averaged) and which stay on the clients.
        downlink: The server-to-client link.
        uplink: The client-to-server link.
        uplink_codecs: Per shared tensor, an algorithm's own uplink codec, or ``None`` for the uplink's.
        layout: What a client holds of the model (:class:`~lightning_fl.federation.layout.WholeModel` by default).
        seed: The federated seed (codec seeds derive from it).
    """

    def __init__(
        self,
        state: FlatState,
        wire: WireSelection,
        downlink: Link,
        uplink: Link,
        uplink_codecs: Sequence[Codec | None],
        layout: ClientLayout,
        seed: int,
    ) -> None:
        self.state, self.wire, self.downlink, self.uplink = state, wire, downlink, uplink
        self.layout = layout
        #: The layout when clients hold parts of the model (the moves are needed), else ``None`` (the fast path).
        self.sub = layout if layout.per_coordinate else None
        self.seed = seed
        self._start, self._start_views = layout.new_flat()
        self._delta, self._delta_views = layout.new_flat()
        self._received, self._received_views = layout.new_flat()
        if self.sub is not None:
            self._cut, self._cut_views = layout.new_flat()
            self._full_update = torch.zeros_like(state.flat)
            self._coverage = torch.zeros_like(state.flat)
            self._index = torch.zeros(0, dtype=torch.int64)
        self.names = wire.shared_of([s.name for s in state.float_specs])
        self._down_codecs = downlink.codecs_for(self.names, wire.shared_of(self._start_views))
        self._up_codecs = [
            own if own is not None else default
            for own, default in zip(uplink_codecs, uplink.codecs_for(self.names, wire.shared_of(self._start_views)),
                                    strict=True)
        ]
        shared_specs = wire.shared_of(state.float_specs)
        #: Shared parameters a client may leave frozen (not an algorithm's server-updated tensor), with positions.
        self._freezable = [
            (j, tensor) for j, (spec, tensor) in enumerate(zip(shared_specs, wire.shared_of(state.module_float),
                                                              strict=True))
            if spec.is_parameter and spec.name not in state.extra_names
        ]
        ints = wire.shared_int_of(state.int_views)
        #: Raw bytes of the shared integer buffers, sent both ways with every model and update.
        self.int_bytes = sum(uplink.raw.encode(t, 0).nbytes for t in ints)
        int_names = wire.shared_int_of([s.name for s in state.int_specs])
        #: Bytes of the whole shared model as raw float32: the reference of the compression ratios.
        self.dense_bytes = uplink.dense_bytes(self.names + int_names, wire.shared_of(state.views) + ints)
        self.start_views: list[torch.Tensor] = self._start_views
        #: One tensor per state tensor, shaped as a client holds it (a submodel's shapes under Federated Dropout).
        self.client_shaped: list[torch.Tensor] = self._start_views

    @torch.no_grad()
    def download(self, round_idx: int, client_id: int, older: torch.Tensor | None = None) -> int:
        """Send the global model (or ``older``, a model version the client downloaded earlier) to the client, cut
        to its submodel, and write what it decodes into the module. Returns the downlink bytes."""
        state, wire = self.state, self.wire
        source, source_views = (state.flat, state.views) if older is None else (older, state.make_views(older))
        if self.sub is not None:  # cut the client's submodel out of the model it downloads
            self._index = self.sub.select(round_idx, client_id)
            self.sub.gather(source, self._index, self._cut)
            source, source_views = self._cut, self._cut_views
        nbytes, received = self.downlink.send(
            self.names, wire.shared_of(source_views), seed=self.seed, round_idx=round_idx, client_id=client_id,
            codecs=self._down_codecs,
        )
        _, self.start_views = wire.client_start(
            source, source_views, received, self.downlink.lossless, self._start, self._start_views
        )
        if self.sub is not None:
            self.sub.shrink()
        state.write_module(self.start_views)
        return nbytes + self.int_bytes + self.layout.downlink_extra_bytes

    @property
    def client_index(self) -> torch.Tensor | None:
        """Where the last downloaded client's submodel sits in the global vector (``None`` without submodels)."""
        return self._index if self.sub is not None else None

    def resume_client(self, start_views: list[torch.Tensor], index: torch.Tensor | None) -> None:
        """Make the exchange serve the client that started from ``start_views`` with submodel ``index`` again (its
        update and upload follow): vectorized chunks download several clients before the first one finishes."""
        self.start_views = start_views
        if self.sub is not None and index is not None:
            self._index = index

    @torch.no_grad()
    def keep_local_start(self) -> None:
        """Take the module's local tensors (a client's own, written by its algorithm after :meth:`download`) as the
        start of those tensors, so the update measures the client's own training."""
        if self.wire.local:
            torch._foreach_copy_(self.wire.local_of(self._start_views), self.wire.local_of(self.state.module_float))

    @torch.no_grad()
    def update(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The client's update ``w_client - w_start`` (flat, and per tensor), local tensors zeroed."""
        self.state.module_minus(self.start_views, self._delta_views)
        self.wire.zero_local(self._delta_views)
        return self._delta, self._delta_views

    def int_increments(self) -> torch.Tensor | None:
        """The client's increments of the shared integer buffers (float64), or ``None`` when there are none."""
        if not self.state.int_numel:
            return None
        increments = self.state.module_int_minus_global()
        self.wire.zero_local_int(increments)
        return increments.to(torch.float64)

    def _sent_positions(self, deltas: list[torch.Tensor]) -> list[int] | None:
        """Positions (among the shared tensors) of the updates that travel, ``None`` for all: frozen parameters the
        client left unchanged stay home, and the server infers their zero update from a presence bit."""
        frozen = [j for j, tensor in self._freezable if not tensor.requires_grad]
        if not frozen:
            return None
        changed = torch.stack([deltas[j].any() for j in frozen]).tolist()  # one device sync, not one per tensor
        skipped = {j for j, moved in zip(frozen, changed, strict=True) if not moved}
        return [j for j in range(len(deltas)) if j not in skipped] if skipped else None

    @torch.no_grad()
    def upload(
        self, round_idx: int, client_id: int, changed: bool = True
    ) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
        """Send the (possibly changed) update through the uplink.

        Args:
            round_idx: The round.
            client_id: The client.
            changed: Whether anything (an algorithm) may have changed the update since the client checked it was
                finite; with ``False`` and a lossless uplink the server's check of what it decodes is skipped (it
                would sum the same tensor again).

        Returns:
            ``(bytes, update, coverage)``: the full-size update the server decodes (``None`` when it is not
            finite: NaN, Inf, or entries whose sum overflows float32) and, for submodels, which coordinates the client
            held (``None`` otherwise).
        """
        deltas = self.wire.shared_of(self._delta_views)
        names, codecs, sent = self.names, self._up_codecs, self._sent_positions(deltas)
        if sent is not None:
            names, codecs, deltas = [names[j] for j in sent], [codecs[j] for j in sent], [deltas[j] for j in sent]
        nbytes, received = self.uplink.send(
            names, deltas, seed=self.seed, round_idx=round_idx, client_id=client_id, codecs=codecs
        )
        nbytes += self.int_bytes
        if sent is not None:  # a presence bit per tensor tells the server which ones were left out
            nbytes += (len(self.names) + 7) // 8
        if self.uplink.lossless:
            update = self._delta  # the tensors left out are zero there already
        else:
            views = self.wire.shared_of(self._received_views)
            if sent is not None:
                torch._foreach_zero_(views)
                views = [views[j] for j in sent]
            if received:  # nothing was sent when every shared tensor is a frozen, unchanged parameter
                torch._foreach_copy_(views, received)
            update = self._received
        # the server's check of what it decoded: an update algorithms scaled to overflow (an attack), or a codec
        # that decoded to garbage (e.g. fp16 overflow)
        if (changed or not self.uplink.lossless) and not bool(torch.isfinite(update.sum())):
            return nbytes, None, None
        if self.sub is None:
            return nbytes, update, None
        # back to full size; the coverage says which coordinates this client held
        self.sub.scatter(update, self._index, self._full_update, self._coverage)
        return nbytes, self._full_update, self._coverage

    @torch.no_grad()
    def estimate_payload_bytes(self) -> tuple[float, float]:
        """The ``(downlink, uplink)`` bytes of one client's model and update: the current global model (client 0's
        part of it in round 0 under submodels) sent through copies of the two links, so no codec state changes.
        Exact for codecs whose payload size depends only on the shapes."""
        state, layout, views = self.state, self.layout, self.state.views
        if self.sub is not None:  # what a client holds, and the seed that says which units
            small, views = layout.new_flat()
            layout.gather(state.flat, layout.select(0, 0), small)
        tensors = self.wire.shared_of(views)
        sizes = []
        for link in (self.downlink, self.uplink):
            nbytes, _ = copy.deepcopy(link).send(self.names, tensors, seed=self.seed, round_idx=0, client_id=0)
            sizes.append(float(nbytes + self.int_bytes))
        return sizes[0] + layout.downlink_extra_bytes, sizes[1]
