"""A client's own codec state (error-feedback residuals) kept in Flower's ``context.state`` between rounds.

In ``lightning-fl fit`` a stateful codec keeps each client's streams (keyed ``"{client_id}/{name}"``) inside the one
codec object. On Flower the client process may serve several clients or restart between rounds, so the client's
streams are written into its node's ``context.state`` after every encoding and loaded back before the next one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from flwr.app import ArrayRecord, RecordDict

from lightning_fl.codecs.base import Codec
from lightning_fl.exceptions import FederatedRuntimeError

__all__ = ["load_codec_state", "save_codec_state"]

#: Prefix of the ``context.state`` records that hold a codec's per-stream state, one record per state field.
RECORD_PREFIX = "lightning_fl.codec/"


def load_codec_state(codec: Codec, state: RecordDict, direction: str) -> None:
    """Load this node's streams into ``codec`` (dropping any other client's streams it holds); a node that has
    none yet starts with empty streams, as a client does in its first round of ``lightning-fl fit``.

    Example:
        >>> from lightning_fl.codecs import ErrorFeedback, SignCompressor
        >>> codec, node = ErrorFeedback(SignCompressor()), RecordDict()
        >>> _ = codec.encode(torch.tensor([1.0, -0.5]), seed=0, key="3/w")
        >>> save_codec_state(codec, node, "uplink")
        >>> codec.residuals.clear()  # a new process
        >>> load_codec_state(codec, node, "uplink")
        >>> list(codec.residuals), codec.residuals["3/w"].tolist()
        (['3/w'], [0.25, 0.25])
    """
    if not codec.stateful:
        return
    fields: dict[str, Any] = {name: OrderedDict() for name in codec.state_dict()}
    prefix = f"{RECORD_PREFIX}{direction}/"
    for name in list(state.array_records):
        if name.startswith(prefix):
            record = state.array_records[name]
            fields[name[len(prefix):]] = OrderedDict((k, torch.from_numpy(a.numpy().copy())) for k, a in record.items())
    codec.load_state_dict(fields)


def save_codec_state(codec: Codec, state: RecordDict, direction: str) -> None:
    """Write ``codec``'s streams into the node's ``context.state``.

    Raises:
        FederatedRuntimeError: If the codec's state is not per-stream tensors (``{field: {stream: tensor}}``).
    """
    if not codec.stateful:
        return
    for field, streams in codec.state_dict().items():
        if not isinstance(streams, dict) or not all(isinstance(t, torch.Tensor) for t in streams.values()):
            raise FederatedRuntimeError(f"{codec!r} keeps state field {field!r} that is not per-stream tensors; a "
                                        "Flower client can keep only {stream: tensor} state between rounds")
        state[f"{RECORD_PREFIX}{direction}/{field}"] = ArrayRecord(
            OrderedDict((k, t.detach().cpu().contiguous()) for k, t in streams.items())
        )
