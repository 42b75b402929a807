"""Checkpoints that are loaded safely and checked before federated training resumes from them.

- :class:`SafeCheckpointIO` wraps the strategy's checkpoint IO: it loads with ``weights_only=True`` unless the caller
  asked otherwise (``torch>=2.4`` defaulted to ``False``, which can run code from a downloaded file), and turns a
  corrupt, truncated or foreign file into one :class:`CheckpointError` naming the file.
- :func:`state_digest` is a SHA-256 over the global weights and the server callback's state; the server callback
  saves it in the checkpoint and compares it at load, so a flipped byte inside a tensor (which ``torch.load`` does not
  notice) is an error, not a silently different run.
- :func:`check_finite_weights` refuses a checkpoint whose weights hold NaN or Inf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO
from typing_extensions import override

from lightning_fl.exceptions import CheckpointError

#: Top-level checkpoint key under which the server callback stores the digest (see :func:`state_digest`).
DIGEST_KEY = "lightning_fl_digest"


class SafeCheckpointIO(CheckpointIO):
    """A checkpoint IO that loads with ``weights_only=True`` by default and reports unreadable files clearly.

    Saving and removing are the wrapped IO's.

    Args:
        inner: The checkpoint IO to wrap (the strategy's).

    Example:
        >>> from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
        >>> type(SafeCheckpointIO(TorchCheckpointIO()).inner).__name__
        'TorchCheckpointIO'
    """

    def __init__(self, inner: CheckpointIO, server_key: str | None = None) -> None:
        self.inner = inner
        self.server_key = server_key

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Save with the wrapped IO, stamped with :func:`state_digest` when a server callback's key is known: here,
        on the final dict, after every callback's and the module's ``on_save_checkpoint`` changed what they will."""
        if self.server_key is not None:
            stamp_checkpoint(checkpoint, self.server_key)
        self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)

    @override
    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Load ``path`` (``weights_only=True`` when not given).

        Raises:
            CheckpointError: The file is missing, corrupt, truncated, not a PyTorch checkpoint, or holds Python
                objects that a weights-only load refuses.
        """
        weights_only = True if weights_only is None else weights_only
        try:
            if map_location is None:
                loaded = self.inner.load_checkpoint(path, weights_only=weights_only)
            else:
                loaded = self.inner.load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError as err:
            raise CheckpointError(f"ckpt_path {str(path)!r} does not exist") from err
        except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
            raise CheckpointError(_unreadable_message(path, err)) from err
        if not isinstance(loaded, dict):
            raise CheckpointError(
                f"checkpoint {str(path)!r} is not a Lightning checkpoint: it holds a {type(loaded).__name__}, "
                "not a dict of states"
            )
        return loaded

    @override
    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    @override
    def teardown(self) -> None:
        self.inner.teardown()


def _unreadable_message(path: Any, err: BaseException) -> str:
    text = str(err)
    unsupported = next((line for line in text.splitlines() if "Unsupported global" in line), None)
    if unsupported is not None:
        return (
            f"checkpoint {str(path)!r} holds Python objects that a safe (weights_only=True) load refuses "
            f"({unsupported.strip()}); lightning-fl checkpoints hold only tensors and plain values"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    marker = next((i for i, line in enumerate(lines) if "WeightsUnpickler error:" in line), None)
    if marker is not None:  # torch's reason follows the marker, on its line or the next
        after = lines[marker].split("WeightsUnpickler error:", 1)[1].strip()
        reason = after or (lines[marker + 1] if marker + 1 < len(lines) else "")
    else:
        reason = lines[0] if lines else ""
    reason = reason.split(". ")[0][:200]
    return (
        f"checkpoint {str(path)!r} is corrupt or truncated (not a readable PyTorch checkpoint): "
        f"{type(err).__name__}: {reason or 'no data'}"
    )


def install_safe_checkpoint_io(strategy: Any, server_key: str | None = None) -> None:
    """Wrap ``strategy.checkpoint_io`` in a :class:`SafeCheckpointIO` (once; called from the server callback's
    ``setup``, which runs before Lightning loads ``ckpt_path``). With ``server_key`` (the server callback's
    ``state_key``) every saved checkpoint is stamped with its digest."""
    if not isinstance(strategy.checkpoint_io, SafeCheckpointIO):
        strategy.checkpoint_io = SafeCheckpointIO(strategy.checkpoint_io)
    if server_key is not None:
        strategy.checkpoint_io.server_key = server_key


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` pairs of a nested structure of dicts, lists and tuples, in a fixed order."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=repr):
            yield from _leaves(value[key], f"{prefix}/{key!r}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{prefix}/{i}")
    else:
        yield prefix, value


def state_digest(weights: Mapping[str, Any], server_state: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the global ``weights`` and the server callback's ``server_state``: every tensor's dtype,
    shape and bytes, and every plain value's ``repr``, with its path.

    Example:
        >>> a = state_digest({"w": torch.ones(2)}, {"steps": 1})
        >>> a == state_digest({"w": torch.ones(2)}, {"steps": 1})
        True
        >>> a == state_digest({"w": torch.zeros(2)}, {"steps": 1})
        False
    """
    digest = hashlib.sha256()
    for path, leaf in _leaves({"weights": weights, "server": server_state}, ""):
        digest.update(path.encode())
        if isinstance(leaf, torch.Tensor):
            tensor = leaf.detach().to("cpu").contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            if tensor.numel():
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(leaf).encode())
    return digest.hexdigest()


def check_finite_weights(weights: Mapping[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` naming the first floating tensor of ``weights`` holding NaN or Inf.

    Args:
        weights: A module state dict.
        source: What the weights are, for the message (e.g. ``"checkpoint 'last.ckpt'"``).

    Example:
        >>> check_finite_weights({"w": torch.tensor([1.0, float("nan")])}, "checkpoint 'x.ckpt'")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_fl.exceptions.CheckpointError: checkpoint 'x.ckpt' holds non-finite weights: 1 NaN or Inf value(s) ...
    """
    for name, tensor in weights.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(
                    f"{source} holds non-finite weights: {bad} NaN or Inf value(s) in {name!r}; refusing to resume "
                    "from a broken global model"
                )


def checkpoint_name(trainer: Any) -> str:
    """How to name the checkpoint being loaded in messages: ``checkpoint '<path>'`` (or just ``checkpoint``)."""
    path = getattr(trainer, "ckpt_path", None)
    return f"checkpoint {str(Path(path))!r}" if path else "checkpoint"


def stamp_checkpoint(checkpoint: dict[str, Any], server_key: str) -> None:
    """Store :func:`state_digest` of ``checkpoint``'s weights and server state (``checkpoint["callbacks"][server_key]``)
    under :data:`DIGEST_KEY` (called by :class:`SafeCheckpointIO` as it saves)."""
    server_state = checkpoint.get("callbacks", {}).get(server_key, {})
    checkpoint[DIGEST_KEY] = state_digest(checkpoint.get("state_dict", {}), server_state)


def verify_checkpoint(checkpoint: Mapping[str, Any], server_key: str, source: str) -> None:
    """Refuse a checkpoint whose weights hold NaN or Inf, or whose weights or server state no longer match the digest
    saved with them. A checkpoint without a digest (written before digests existed) is only checked for NaN and Inf.

    Raises:
        CheckpointError: Naming ``source`` and what is wrong.
    """
    weights = checkpoint.get("state_dict", {})
    saved = checkpoint.get(DIGEST_KEY)
    if saved is not None:
        server_state = checkpoint.get("callbacks", {}).get(server_key, {})
        if state_digest(weights, server_state) != saved:
            raise CheckpointError(
                f"{source} is corrupt: its weights or federated state do not match the SHA-256 digest saved with them "
                "(a changed byte, or a file edited after saving)"
            )
    check_finite_weights(weights, source)
