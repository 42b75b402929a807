"""The seam between the server callback and algorithm callbacks.

An algorithm is "what the client does" plus "what the server does with the aggregate". A
:class:`FederatedAlgorithm` placed in ``Trainer(callbacks=[...])`` next to :class:`FederatedAveraging` is called
by it at fixed points of a round, in ``order`` (then list order):

1. ``on_federated_fit_start(context)`` once the global state exists (after any checkpoint was loaded);
2. ``client_start_weights(round_idx, client_id)`` before the downlink: an older global model the client downloaded
   (asynchronous training), or ``None`` for the current one;
3. ``on_client_start(client)`` after the client's starting weights are in the module;
4. ``on_client_update(client, update, views)`` with the client's update ``w_client - w_start`` (personal tensors
   already zeroed), before the uplink codec; it may change the update in place (clipping, attacks);
5. ``client_weight(client, weight)``: the client's weight in the mean (default its sample count);
6. ``on_round_synced(round, aggregator)`` on every rank right after the round's all-reduce, before the server
   step (noise on the sum; the sums an algorithm declared with ``context.sum_state`` are reduced by then);
7. ``on_round_end(trainer, round)`` after the new global model is in the module; returns metrics logged with the
   round's ``fl/`` scalars.

``local_tensor_names`` (asked once at fit start) names tensors that never leave the clients, and
``load_client_tensors(client_id)`` writes a client's own copy of them into the module (for evaluation).
Algorithms may also use any Lightning hook (``on_before_optimizer_step`` for gradient corrections). When no
algorithm is present the server callback does no per-client work for them.

An algorithm sees the round only through the contexts it is handed (:class:`FederatedContext` for the fit, with
``context.round`` for the current round; :class:`ClientContext`; :class:`RoundContext`); it holds no pointer to the
server callback. What it can be combined with is declared in class flags the runtime checks at setup:
``keeps_client_state``, ``provides_submodels``, ``supports_submodels`` and ``decides_participation``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_fl.datamodules.plan import Participation, RoundDriver
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError
from lightning_fl.federation.cohort_context import CohortContext
from lightning_fl.federation.context import ClientContext, FederatedContext, RoundContext
from lightning_fl.namespaces import Callback

if TYPE_CHECKING:
    from lightning_fl.codecs.base import Codec
    from lightning_fl.federation.flat import FlatState
    from lightning_fl.federation.layout import ClientLayout
    from lightning_fl.federation.link import Link
    from lightning_fl.server.aggregator import Aggregator


class FederatedAlgorithm(Callback):
    """Base of algorithm callbacks that :class:`FederatedAveraging` calls during a round.

    Subclasses override the hooks they need; every hook is a no-op by default. Hooks that change a client's
    update run in ascending ``order``: an attack (10) acts before differential-privacy clipping (20); algorithms
    that read the honest update (SCAFFOLD) keep 0. A subclass that keeps per-client state on the rank that runs
    the client sets ``keeps_client_state = True``: with several processes, clients are then pinned to ranks.

    Capabilities (class flags, checked by the server callback at setup):

    - ``provides_submodels``: :meth:`client_layout` gives clients smaller models (Federated Dropout); at most one.
    - ``supports_submodels``: the algorithm's client work does not depend on the shapes of the model's tensors, so
      it may run next to a ``provides_submodels`` algorithm (it sees the clients' submodels).
    - ``decides_participation``: :meth:`participation` decides who trains each round (simulated devices); at most
      one.
    - ``supports_cohorts``: whether it works when a round's clients are trained at once (``vectorize``): ``True``
      or ``False`` declares it; ``None`` (default) decides by inspection: refused when it overrides a Lightning
      per-step hook (``on_before_optimizer_step`` and the like) without :meth:`on_before_cohort_step`.

    Example:
        >>> class CountClients(FederatedAlgorithm):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.seen = 0
        ...     def on_client_start(self, client: ClientContext) -> None:
        ...         self.seen += 1
        >>> CountClients().seen
        0
    """

    order: ClassVar[int] = 0
    keeps_client_state: ClassVar[bool] = False
    provides_submodels: ClassVar[bool] = False
    supports_submodels: ClassVar[bool] = False
    decides_participation: ClassVar[bool] = False
    #: Not a ClassVar: an instance may refine it (MaliciousClients' label_flip cannot run in cohorts).
    supports_cohorts: bool | None = None

    def __init__(self) -> None:
        self._context: FederatedContext | None = None

    @override
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if not any(isinstance(cb, RoundDriver) for cb in trainer.callbacks):  # type: ignore[attr-defined]
            raise FederatedConfigError(
                f"{type(self).__name__} needs a FederatedAveraging callback in the same Trainer, got none"
            )

    @property
    def context(self) -> FederatedContext:
        """The fit's :class:`FederatedContext` (known from fit start)."""
        if self._context is None:
            raise FederatedRuntimeError(f"{type(self).__name__} is used before fit start")
        return self._context

    # ------------------------------------------------------------------ hooks called by FederatedAveraging
    def global_tensor_names(self, pl_module: "pl.LightningModule") -> set[str]:
        """Names of frozen parameters (``requires_grad=False``) that are global state all the same: sent to the
        clients and updated by the server (FedMRN's frozen weights). Asked once at fit start."""
        return set()

    def uplink_codec_for(self, name: str) -> Codec | None:
        """A codec of this algorithm's own for the uplink of tensor ``name`` (``None``: the server callback's)."""
        return None

    def local_tensor_names(self, pl_module: "pl.LightningModule", state: FlatState) -> set[str]:
        """Names (as in ``state.float_specs`` and ``state.int_specs``) of tensors that never leave the clients:
        not sent, not averaged, not counted in the bytes. Asked once at fit start."""
        return set()

    def client_layout(self, pl_module: "pl.LightningModule", state: FlatState, seed: int) -> ClientLayout | None:
        """What clients train instead of the whole model (Federated Dropout's submodels), for an algorithm that
        declares ``provides_submodels = True``; ``None``: the whole model. Asked once at fit start."""
        if type(self).client_submodels is not FederatedAlgorithm.client_submodels:  # written for the former name
            return self.client_submodels(pl_module, state, seed)
        return None

    def client_submodels(self, *args: Any, **kwargs: Any) -> ClientLayout | None:
        """The former name of :meth:`client_layout` (forwards to it)."""
        return self.client_layout(*args, **kwargs)

    def participation(self, round_idx: int) -> Participation:
        """Who trains in ``round_idx`` and for how many batches: implemented by an algorithm that declares
        ``decides_participation = True`` (called once per planned round, and must answer identically on every rank).

        Raises:
            FederatedRuntimeError: When not implemented.
        """
        raise FederatedRuntimeError(
            f"{type(self).__name__} must implement participation(round_idx) to declare decides_participation = True"
        )

    def on_federated_fit_start(self, context: FederatedContext) -> None:
        """The global state exists; allocate and apply any loaded checkpoint state here."""
        self._context = context

    def client_start_weights(self, round_idx: int, client_id: int) -> torch.Tensor | None:
        """The global model this client downloaded, as a flat vector laid out like ``context.state.flat``, when it is
        not the current one (FedBuff's stale clients); the downlink codec then sends it, the client trains from it
        and its update is taken against it. ``None`` (default): the current global model. Integer buffers always
        come from the current model."""
        return None

    def on_client_start(self, client: ClientContext) -> None:
        """The client's starting weights are in the module; its training follows."""

    def load_client_tensors(self, client_id: int) -> None:
        """Write the client's own tensors (those that never leave it) into the module (used to evaluate a client's
        personal model as well as at its start)."""

    def on_before_cohort_step(self, cohort: CohortContext) -> None:
        """Vectorized mode: before each optimizer step of a chunk of clients trained at once, with each client's
        gradient in its slot of ``cohort.params[i].grad``. An algorithm that acts on a client's optimizer steps
        (``on_before_optimizer_step`` and the like) implements this too, or is refused in vectorized mode."""

    def on_client_update(self, client: ClientContext, update: torch.Tensor, views: list[torch.Tensor]) -> None:
        """The client's flat ``update`` (``views``: per tensor), before the uplink codec; may change it in place."""

    def client_weight(self, client: ClientContext, weight: float) -> float:
        """The client's weight in the round's mean (``weight``: as the previous algorithms left it)."""
        return weight

    def on_round_synced(self, round_context: RoundContext, aggregator: Aggregator) -> None:
        """The round's updates are combined over all ranks; the server step follows (called on every rank)."""

    def on_round_end(self, trainer: "pl.Trainer", round_context: RoundContext) -> dict[str, float]:
        """The new global model is in the module. Returns metrics to log with the round's scalars."""
        return {}


def find_algorithms(trainer: "pl.Trainer") -> list[FederatedAlgorithm]:
    """The trainer's algorithm callbacks, in hook order (``order``, then list order)."""
    found = [cb for cb in trainer.callbacks if isinstance(cb, FederatedAlgorithm)]  # type: ignore[attr-defined]
    return sorted(found, key=lambda a: a.order)


def check_capabilities(algorithms: list[FederatedAlgorithm], links: tuple[Link, ...]) -> None:
    """Refuse algorithms that cannot run together, from what they declare (at setup).

    Args:
        algorithms: The Trainer's algorithm callbacks.
        links: The server callback's downlink and uplink.

    Raises:
        FederatedConfigError: Two algorithms give submodels or decide participation; an algorithm that does not
            declare ``supports_submodels`` next to one that gives submodels; a stateful codec with submodels.
    """
    deciding = [type(a).__name__ for a in algorithms if a.decides_participation]
    if len(deciding) > 1:
        raise FederatedConfigError(
            f"{deciding[1]} decides who trains each round, but the participation hook is already taken by "
            f"{deciding[0]}: {' and '.join(deciding)} both decide who trains each round; use one of them"
        )
    for algorithm in algorithms:
        overridden = [m for m in ("client_layout", "client_submodels")
                      if getattr(type(algorithm), m) is not getattr(FederatedAlgorithm, m)]
        if overridden and not algorithm.provides_submodels:
            raise FederatedConfigError(
                f"{type(algorithm).__name__} overrides {overridden[0]}() but does not declare provides_submodels = "
                "True; declare it so the runtime asks it for the clients' layout"
            )
    providers = [a for a in algorithms if a.provides_submodels]
    if len(providers) > 1:
        raise FederatedConfigError(
            f"only one algorithm may give clients submodels, got {len(providers)}: "
            f"{', '.join(type(a).__name__ for a in providers)}"
        )
    if not providers:
        return
    provider = type(providers[0]).__name__
    for algorithm in algorithms:
        name = type(algorithm).__name__
        if algorithm is not providers[0] and not algorithm.supports_submodels:
            raise FederatedConfigError(
                f"{provider} cannot be combined with {name}: {name} does not declare supports_submodels = True (it "
                "keeps or changes full-size per-tensor state while clients hold submodels)"
            )
    for link in links:
        if link.codec.stateful:
            raise FederatedConfigError(
                f"{provider} cannot be combined with the stateful {link.direction} codec {link.codec!r}: its "
                "per-client state (error-feedback residuals) would be added to a different submodel's coordinates "
                "in the next round"
            )
