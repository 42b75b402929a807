"""Per-client state that outlives a round: each client's own model (and optimizer) state, and the server's
logits for each training sample.

In group knowledge transfer the clients keep their own models between rounds (nothing is averaged), so the
state of every client that has trained must be kept somewhere other than the one module that trains them all.
:class:`ClientStateStore` keeps it on CPU, at most ``max_resident`` clients in memory (least recently used
first out), the rest spilled to files; both kinds are saved in checkpoints. :class:`SampleLogitTable` holds the
logits the server last sent for each sample id.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from lightning_fl.checks import check_int
from lightning_fl.exceptions import FederatedConfigError

State = dict[str, Any]
"""A nested dict whose leaves are tensors (or plain Python values)."""


def to_cpu(state: Any) -> Any:
    """A detached CPU copy of every tensor in a nested dict/list structure (other leaves kept as they are).

    Example:
        >>> s = to_cpu({"w": torch.ones(2, requires_grad=True), "n": [torch.tensor(3)]})
        >>> s["w"].requires_grad, s["n"][0].item()
        (False, 3)
    """
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_cpu(v) for v in state)
    return state


def state_nbytes(state: Any) -> int:
    """Bytes held by the tensors of a nested structure.

    Example:
        >>> state_nbytes({"a": torch.zeros(3), "b": {"c": torch.zeros(2, dtype=torch.int64)}})
        28
    """
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


def optimizer_state(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
    """The optimizer's per-parameter state (Adam moments, SGD momentum) for ``params``, in their order, on CPU.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
        >>> w.sum().backward(); opt.step()
        >>> optimizer_state(opt, [w])[0]["momentum_buffer"].tolist()
        [1.0, 1.0]
    """
    return [to_cpu(dict(optimizer.state.get(p, {}))) for p in params]


def restore_optimizer_state(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], saved: list[dict[str, Any]] | None
) -> None:
    """Clear the optimizer's state and load ``saved`` (from :func:`optimizer_state`) for ``params``.

    Tensors with elements go to their parameter's device; scalar tensors (Adam's ``step``) stay on CPU, where
    non-capturable torch optimizers keep them. ``saved=None`` leaves the state empty.
    """
    optimizer.state.clear()
    if not saved:
        return
    for param, state in zip(params, saved, strict=True):
        optimizer.state[param] = {
            k: v.to(param.device) if isinstance(v, torch.Tensor) and v.dim() else v for k, v in state.items()
        }


class ClientStateStore:
    """Each client's own state on CPU, bounded in memory, saved in checkpoints.

    A client that has never trained has no entry: :meth:`get` returns ``None`` and the caller starts it from the
    common initial state. With ``max_resident=k`` at most k clients' states stay in memory; the least recently
    used are written to ``client_<id>.pt`` in a private folder that the store creates inside ``spill_dir`` (so two
    runs sharing ``spill_dir`` never read each other's files) and removes when it is garbage-collected.
    :meth:`state_dict` reads every spilled state back (a checkpoint holds all clients), so peak memory while
    checkpointing is all clients.

    Args:
        max_resident: Clients kept in memory (``None``: all).
        spill_dir: Folder for spilled states; required with ``max_resident``.

    Raises:
        FederatedConfigError: If ``max_resident < 1`` or ``max_resident`` is given without ``spill_dir``.

    Example:
        >>> store = ClientStateStore()
        >>> store.put(3, {"w": torch.ones(2)})
        >>> store.get(3)["w"].tolist(), store.get(4), len(store)
        ([1.0, 1.0], None, 1)
    """

    def __init__(self, max_resident: int | None = None, spill_dir: str | None = None) -> None:
        if max_resident is not None:
            check_int("max_resident", max_resident, low=1)
            if spill_dir is None:
                raise FederatedConfigError(
                    f"spill_dir is required with max_resident={max_resident} (states beyond it are written there)"
                )
        self.max_resident = max_resident
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._folder: Path | None = None
        self._resident: OrderedDict[int, State] = OrderedDict()
        self._spilled: set[int] = set()

    def __len__(self) -> int:
        return len(self._resident) + len(self._spilled)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._resident or client_id in self._spilled

    def client_ids(self) -> list[int]:
        """Clients with a stored state, ascending."""
        return sorted([*self._resident, *self._spilled])

    @property
    def resident_nbytes(self) -> int:
        """Bytes of the states now held in memory."""
        return sum(state_nbytes(s) for s in self._resident.values())

    def put(self, client_id: int, state: State) -> None:
        """Store a CPU copy of ``state`` as ``client_id``'s, replacing any older one."""
        self._spilled.discard(client_id)
        self._resident[client_id] = to_cpu(state)
        self._resident.move_to_end(client_id)
        self._evict()

    def get(self, client_id: int) -> State | None:
        """``client_id``'s state (CPU tensors; do not modify in place), or ``None`` if it never trained."""
        if client_id in self._resident:
            self._resident.move_to_end(client_id)
            return self._resident[client_id]
        if client_id not in self._spilled:
            return None
        state = torch.load(self._path(client_id), map_location="cpu", weights_only=True)
        self._spilled.discard(client_id)
        self._resident[client_id] = state
        self._evict()
        return state

    def _path(self, client_id: int) -> Path:
        if self._folder is None:
            assert self.spill_dir is not None
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            self._folder = Path(tempfile.mkdtemp(prefix="fedgkt_clients_", dir=self.spill_dir))
            weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        return self._folder / f"client_{client_id}.pt"

    def _evict(self) -> None:
        if self.max_resident is None:
            return
        while len(self._resident) > self.max_resident:
            client_id, state = self._resident.popitem(last=False)
            torch.save(state, self._path(client_id))
            self._spilled.add(client_id)

    def state_dict(self) -> dict[str, Any]:
        """Every client's state, keyed by client id (spilled ones read back)."""
        states = {}
        for client_id in self.client_ids():
            if client_id in self._resident:
                states[client_id] = self._resident[client_id]
            else:
                states[client_id] = torch.load(self._path(client_id), map_location="cpu", weights_only=True)
        return {"states": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Replace the stored states with those of :meth:`state_dict`."""
        self._resident.clear()
        self._spilled.clear()
        for client_id, state in state_dict["states"].items():
            self.put(int(client_id), state)


class SampleLogitTable:
    """The logits the server last sent for each training sample, keyed by the sample's dataset index.

    Args:
        num_samples: Size of the training set (ids run from 0 to ``num_samples - 1``).
        num_classes: Logits per sample.

    Example:
        >>> table = SampleLogitTable(5, 2)
        >>> table.put(torch.tensor([4, 1]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> logits, mask = table.get(torch.tensor([1, 0, 4]))
        >>> logits.tolist(), mask.tolist()
        ([[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]], [True, False, True])
    """

    def __init__(self, num_samples: int, num_classes: int) -> None:
        self.logits = torch.zeros(num_samples, num_classes)
        self.valid = torch.zeros(num_samples, dtype=torch.bool)

    def put(self, ids: torch.Tensor, logits: torch.Tensor) -> None:
        """Record ``logits[i]`` as the server's logits of sample ``ids[i]``."""
        ids = ids.cpu()
        self.logits[ids] = logits.detach().float().cpu()
        self.valid[ids] = True

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, valid)`` for ``ids`` (CPU tensors); rows never sent are zeros with ``valid`` False."""
        ids = ids.cpu()
        return self.logits[ids], self.valid[ids]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The table's tensors."""
        return {"logits": self.logits, "valid": self.valid}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            FederatedConfigError: If the saved table has another shape (another dataset or class count).
        """
        logits = state_dict["logits"]
        if logits.shape != self.logits.shape:
            raise FederatedConfigError(
                f"saved server logits have shape {tuple(logits.shape)}, this run needs {tuple(self.logits.shape)} "
                "(num_samples, num_classes): was the checkpoint made with another dataset?"
            )
        self.logits = logits.float().clone()
        self.valid = state_dict["valid"].bool().clone()
