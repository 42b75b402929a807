"""What defines a federated data configuration, saved with checkpoints so that a resume on other data is refused.

Per-client state (SCAFFOLD control variates, error-feedback residuals, asynchronous buffers) is keyed by client id;
resumed on a different partition it would be applied to clients that now hold other data. The fingerprint records the
dataset size, the partitioner and its arguments, the number of clients, a digest of the partition itself and the
settings of the round plan; :func:`fingerprint_changes` names every one that differs.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_fl.datamodules.client_indices import ClientIndices

if TYPE_CHECKING:
    from lightning_fl.datamodules.federated import FederatedDataModule

_PLAIN = (int, float, str, bool, type(None))

#: The data module's settings that shape the partition or the rounds' plans (recorded next to the dataset size, the
#: partitioner and its arguments, and the partition's digest).
PLAN_SETTINGS = (
    "seed", "local_val_fraction", "clients_per_round", "client_sampling", "batch_size", "local_epochs", "shuffle",
    "drop_last",
)


def _plain(value: Any) -> Any:
    """``value`` when it is a plain value (or a list/tuple of them, as a list), else ``None`` (not recorded)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value):
        return list(value)
    return None


def partition_digest(client_indices: Sequence[np.ndarray], client_val_indices: Sequence[np.ndarray]) -> str:
    """SHA-256 (hex) of every client's training and local validation sample indices, in client order: for each split
    its number of clients, then for each client its number of indices (decimal) and the indices' ``int64`` bytes. A
    :class:`ClientIndices` is hashed in vectorized chunks of clients, to the same digest.

    Example:
        >>> a = partition_digest([np.array([0, 2]), np.array([1])], [])
        >>> a == partition_digest([np.array([0]), np.array([1, 2])], [])
        False
    """
    digest = hashlib.sha256()
    for split in (client_indices, client_val_indices):
        digest.update(str(len(split)).encode())
        if isinstance(split, ClientIndices):
            for start in range(0, len(split), _DIGEST_CHUNK):
                digest.update(_flat_records(split, start, min(start + _DIGEST_CHUNK, len(split))).data)
            continue
        for ix in split:
            array = np.ascontiguousarray(np.asarray(ix, dtype=np.int64))
            digest.update(str(len(array)).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


#: Clients whose records :func:`partition_digest` builds at once from a :class:`ClientIndices`.
_DIGEST_CHUNK = 1 << 16

#: The digest of a set-up partition, kept with its training indices: a partition does not change after setup, and a
#: checkpoint (which records the digest) may be saved every round.
_DIGESTS: weakref.WeakKeyDictionary[ClientIndices, tuple[Sequence[np.ndarray], str]] = weakref.WeakKeyDictionary()


def _partition_digest_once(client_indices: Sequence[np.ndarray], client_val_indices: Sequence[np.ndarray]) -> str:
    """:func:`partition_digest`, computed once per pair of :class:`ClientIndices` (every time for lists)."""
    if not isinstance(client_indices, ClientIndices):
        return partition_digest(client_indices, client_val_indices)
    known = _DIGESTS.get(client_indices)
    if known is not None and known[0] is client_val_indices:
        return known[1]
    digest = partition_digest(client_indices, client_val_indices)
    _DIGESTS[client_indices] = (client_val_indices, digest)
    return digest


def _flat_records(split: ClientIndices, start: int, end: int) -> np.ndarray:
    """The bytes that :func:`partition_digest` hashes for clients ``start..end-1``: each client's size in decimal
    digits, then its indices' ``int64`` bytes, built without a Python loop over the clients."""
    sizes = split.sizes[start:end]
    digits = np.ones(len(sizes), dtype=np.int64)
    for power in range(1, 19):
        digits += sizes >= 10**power
    heads = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum((digits + 8 * sizes)[:-1], out=heads[1:])
    out = np.empty(int(digits.sum() + 8 * sizes.sum()), dtype=np.uint8)
    is_index = np.ones(len(out), dtype=bool)
    for place in range(int(digits.max(initial=0))):
        has = digits > place
        where = heads[has] + place
        out[where] = 48 + (sizes[has] // 10 ** (digits[has] - 1 - place)) % 10
        is_index[where] = False
    indices = split.flat[split.offsets[start] : split.offsets[end]]
    out[is_index] = np.ascontiguousarray(indices, dtype=np.int64).view(np.uint8)
    return out


def data_fingerprint(dm: FederatedDataModule) -> dict[str, Any]:
    """The fingerprint of a set-up data module: plain values only, so a weights-only load can read it back.

    Example:
        >>> from lightning_fl.datamodules import FederatedDataModule, IIDPartitioner
        >>> dm = FederatedDataModule(partitioner=IIDPartitioner(num_clients=10), clients_per_round=3)
        >>> dm.setup("fit")
        >>> fp = data_fingerprint(dm)
        >>> fp["num_clients"], fp["partitioner"], fp["clients_per_round"]
        (10, 'IIDPartitioner', 3)
    """
    assert dm.train_dataset is not None
    fingerprint: dict[str, Any] = {
        "dataset_size": len(dm.train_dataset),  # type: ignore[arg-type]
        "num_clients": len(dm.client_indices),
        "partitioner": type(dm.partitioner).__name__,
    }
    for name, value in sorted(vars(dm.partitioner).items()):
        if not name.startswith("_") and name != "num_clients" and (plain := _plain(value)) is not None:
            fingerprint[f"partitioner.{name}"] = plain
    for name in PLAN_SETTINGS:  # a setting the data module does not have is recorded as None on both sides
        fingerprint[name] = _plain(getattr(dm, name, None))
    fingerprint["partition"] = _partition_digest_once(dm.client_indices, dm.client_val_indices)
    return fingerprint


def fingerprint_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One ``"name: checkpoint A, now B"`` per setting that differs (the partition digest is named only when nothing
    explains it: then the dataset's content or order changed).

    Example:
        >>> fingerprint_changes({"num_clients": 8, "partition": "a"}, {"num_clients": 4, "partition": "b"})
        ['num_clients: checkpoint 8, now 4']
    """
    changes = [
        f"{name}: checkpoint {saved.get(name, '(not set)')!r}, now {current.get(name, '(not set)')!r}"
        for name in [*saved, *(n for n in current if n not in saved)]
        if name != "partition" and saved.get(name) != current.get(name)
    ]
    if not changes and saved.get("partition") != current.get("partition"):
        changes.append("the partition (which samples each client holds): the training data's content or order changed")
    return changes
