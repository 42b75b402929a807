"""The one all-reduce of a round: every sum-state of the round packed into one float64 buffer.

Aggregators declare their sum-states (:meth:`~lightning_fl.server.aggregator.Aggregator.add_state`), the runtime
adds its counters and the algorithms theirs, and :func:`all_reduce_sums` sums them over the processes in a single
collective instead of one per tensor. float64 keeps integer counters above ``2**24`` exact, and the float64 sum of
two float32 values rounds back to exactly their float32 sum, so two processes give the same numbers as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether several processes of a default process group run."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SumBuffer:
    """A reusable float64 buffer for :func:`all_reduce_sums`, sized for a fixed list of tensors.

    Example:
        >>> buffer = SumBuffer([torch.zeros(2), torch.zeros(3, dtype=torch.float64)])
        >>> buffer.numel, [tuple(v.shape) for v in buffer.views]
        (5, [(2,), (3,)])
    """

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        device = tensors[0].device if tensors else torch.device("cpu")
        self.numel = sum(t.numel() for t in tensors)
        self.flat = torch.zeros(self.numel, dtype=torch.float64, device=device)
        self.views = list(self.flat.split([t.numel() for t in tensors])) if tensors else []

    def fits(self, tensors: Sequence[torch.Tensor]) -> bool:
        """Whether the buffer has one view of the right size, on the right device, for each of ``tensors``."""
        return len(self.views) == len(tensors) and all(
            v.numel() == t.numel() and v.device == t.device for v, t in zip(self.views, tensors, strict=True)
        )


@torch.no_grad()
def all_reduce_sums(tensors: Sequence[torch.Tensor], buffer: SumBuffer | None = None) -> SumBuffer | None:
    """Sum every tensor of ``tensors`` over the processes of the default group, in place, with ONE all-reduce.

    In one process this is a no-op (results stay bit-identical). Otherwise the tensors are packed into a float64
    buffer (``buffer`` when it fits, else a new one), summed by one ``dist.all_reduce`` and copied back, cast to
    each tensor's own dtype. All tensors must be on the same device.

    Args:
        tensors: The sum-states, flat or not; integer tensors are allowed (their sums must stay below ``2**53``).
        buffer: A buffer from an earlier call with tensors of the same sizes, reused to avoid an allocation.

    Returns:
        The buffer used (pass it to the next call), or ``None`` in one process.

    Example:
        >>> t = torch.ones(3)
        >>> all_reduce_sums([t]) is None and t.tolist() == [1.0, 1.0, 1.0]  # one process: nothing to do
        True
    """
    if not is_distributed() or not tensors:
        return None
    if buffer is None or not buffer.fits(tensors):
        buffer = SumBuffer(tensors)
    flat_tensors = [t.reshape(-1) for t in tensors]
    torch._foreach_copy_(buffer.views, flat_tensors)
    dist.all_reduce(buffer.flat)
    for tensor, view in zip(tensors, buffer.views, strict=True):
        tensor.copy_(view.view(tensor.shape))
    return buffer
