"""Per-client codec state (error-feedback residuals) gathered from every rank into one checkpoint."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from lightning_fl.codecs.base import Codec


def owner_rank(stream_key: str, world_size: int) -> int:
    """The rank that holds a stream's state: clients are pinned to rank ``client_id % world_size``.

    Example:
        >>> owner_rank("7/fc.weight", 2)
        1
    """
    return int(stream_key.split("/", 1)[0]) % world_size


def merge_stream_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the state dicts of one stateful codec from every rank, keeping each stream from its owner.

    Fields whose values are dicts keyed by stream (``"client_id/tensor_name"``) are merged by ownership; any
    other field is taken from rank 0.

    Example:
        >>> merge_stream_states([{"residuals": {"0/w": "a", "1/w": "stale"}}, {"residuals": {"1/w": "b"}}])
        {'residuals': {'0/w': 'a', '1/w': 'b'}}
    """
    world = len(states)
    merged: dict[str, Any] = {}
    for rank, state in enumerate(states):
        for field, value in state.items():
            if isinstance(value, dict):
                own = {k: v for k, v in value.items() if owner_rank(k, world) == rank}
                merged.setdefault(field, {}).update(own)
            elif rank == 0:
                merged[field] = value
    return merged


def gather_codec_state(codec: Codec) -> dict[str, Any]:
    """``codec.state_dict()``, merged over all ranks when several processes train (a collective call: every rank
    must call it, as Lightning does when it dumps a checkpoint)."""
    state = codec.state_dict()
    if not codec.stateful or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return state
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return merge_stream_states(states)
