"""Error feedback: carry what a lossy codec dropped into the same stream's next message."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import torch

from lightning_fl.checks import check_int
from lightning_fl.codecs.base import Codec, Payload
from lightning_fl.exceptions import FederatedConfigError, PayloadError


class ErrorFeedback(Codec):
    """Wrap ``codec`` so that the error it makes on one message is added to the next one of the same stream.

    For stream ``key`` (for example ``"client7/fc1.weight"``) with residual ``e`` (zero at first):
    ``payload = codec.encode(x + e)`` and ``e <- (x + e) - codec.decode(payload)``. The sum of decoded
    messages then tracks the sum of inputs up to the last residual, which makes biased codecs (top-k, sign)
    converge. Payloads are ``codec``'s own, so a receiver decodes them with ``codec`` alone.

    Residuals live on CPU in float32 (float64 for float64 inputs) and are part of :meth:`state_dict`.
    Memory: 4 bytes per compressed parameter per stream, so for a model of P compressed parameters and C
    clients, up to ``4 * P * C`` bytes; ``max_streams`` bounds it by evicting the least recently used
    streams (their residual is dropped, as if the client started afresh). :meth:`forget` drops a client.

    Args:
        codec: The lossy codec to wrap.
        max_streams: Keep at most this many residuals (None: unbounded).

    Raises:
        FederatedConfigError: If ``max_streams`` is not None or a positive integer.

    Example:
        >>> from lightning_fl.codecs import SignCompressor
        >>> codec = ErrorFeedback(SignCompressor())
        >>> x = torch.tensor([1.0, -0.1])
        >>> total = sum(codec.decode(codec.encode(x, seed=r, key="c0/w")) for r in range(100))
        >>> torch.allclose(total / 100, x, atol=0.02)
        True
    """

    unbiased = False
    stateful = True

    def __init__(self, codec: Codec, max_streams: int | None = None) -> None:
        if not isinstance(codec, Codec):
            raise FederatedConfigError(f"codec must be a Codec, got {type(codec).__name__}")
        if max_streams is not None:
            check_int("max_streams", max_streams, low=1)
        if codec.unbiased and not codec.lossless:
            warnings.warn(
                f"ErrorFeedback({codec!r}): error feedback is meant for biased, contractive codecs (TopK, "
                "MagnitudePrune, SignCompressor). An unbiased codec that rescales (Subsample, StochasticQuantizer) "
                "can return more error than it removes, and the residual then grows from round to round; measured "
                "on digits it diverged. Use the codec without ErrorFeedback.",
                UserWarning,
                stacklevel=2,
            )
        self.codec = codec
        self.max_streams = max_streams
        self.lossless = codec.lossless
        self.residuals: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._last: tuple[Payload, torch.Tensor] | None = None

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def residual_bytes(self) -> int:
        """Bytes held by the residuals."""
        return sum(r.numel() * r.element_size() for r in self.residuals.values())

    def encode(self, x: torch.Tensor, seed: int, key: str | None = None) -> Payload:
        if key is None:
            raise FederatedConfigError("ErrorFeedback.encode needs key= to name the stream, e.g. 'client7/fc1.weight'")
        dtype = torch.promote_types(x.dtype, torch.float32)
        target = x.detach().to(dtype)
        residual = self.residuals.get(key)
        if residual is not None:
            if residual.shape != x.shape:
                raise FederatedConfigError(
                    f"stream {key!r} had shape {tuple(residual.shape)}, got {tuple(x.shape)}; forget() it first"
                )
            target = target + residual.to(device=x.device, dtype=dtype)
        payload = self.codec.encode(target.to(x.dtype), seed, key=key)
        decoded = self.codec.decode(payload)
        self.residuals[key] = (target - decoded.to(dtype)).to("cpu")
        self.residuals.move_to_end(key)
        if self.max_streams is not None:
            while len(self.residuals) > self.max_streams:
                self.residuals.popitem(last=False)
        self._last = (payload, decoded)
        return payload

    def decode(self, payload: Payload) -> torch.Tensor:
        if self._last is not None and self._last[0] is payload:  # the sender decodes right after encoding
            decoded = self._last[1]
            self._last = None
            return decoded
        return self.codec.decode(payload)

    def check_payload_for(self, payload: Payload, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """The wrapped codec's check: payloads are its own."""
        self.codec.check_payload_for(payload, shape, dtype)

    def state_dict(self) -> dict[str, Any]:
        """``{"residuals": {key: tensor}}``, least recently used first."""
        return {"residuals": OrderedDict(self.residuals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (tensors are moved to CPU)."""
        if set(state_dict) != {"residuals"}:
            raise PayloadError(f"ErrorFeedback state must have exactly the key 'residuals', got {sorted(state_dict)}")
        residuals = state_dict["residuals"]
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in residuals.items()):
            raise PayloadError("ErrorFeedback residuals must map stream names (str) to tensors")
        self.residuals = OrderedDict((k, v.detach().to("cpu")) for k, v in residuals.items())
        if self.max_streams is not None:
            while len(self.residuals) > self.max_streams:
                self.residuals.popitem(last=False)
        self._last = None

    def forget(self, key_prefix: str) -> None:
        """Drop the residuals of every stream whose key starts with ``key_prefix`` (e.g. ``"client7/"``)."""
        for key in [k for k in self.residuals if k.startswith(key_prefix)]:
            del self.residuals[key]
        self.codec.forget(key_prefix)

    def __repr__(self) -> str:
        bound = "" if self.max_streams is None else f", max_streams={self.max_streams}"
        return f"ErrorFeedback({self.codec!r}{bound})"
