"""Composition of stages: encode forward, decode in reverse, one payload."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_fl.codecs.base import Codec, Payload
from lightning_fl.codecs.stage import (
    Stage,
    TerminalStage,
    check_stages_for,
    decode_stages,
    encode_stages,
    split_stages,
)
from lightning_fl.exceptions import FederatedConfigError


class Chain(Codec):
    """Run ``stages`` forward on encode and in reverse on decode; the payload holds every stage's header.

    All stages but the last must be transforms (rotation, Kashin, subsampling, sparsification, cast); the last
    may be a terminal stage that writes the body (a quantizer or the sign compressor), otherwise the final
    tensor travels as raw float32 (or the dtype of a preceding cast). Stage ``i`` draws its randomness from
    ``derive_seed(seed, "stage", i)``; the seed travels once (8 bytes) when any decoder needs it. A chain is
    ``lossless`` / ``unbiased`` when all its stages are (every unbiased stage here has a linear decoder, so
    unbiasedness composes). Nested chains are flattened. See :mod:`lightning_fl.codecs.stage` for the layout.

    Args:
        *stage_args: The stages, in encoding order (``Chain(RandomHadamard(), StochasticQuantizer(bits=2))``).
        stages: The same as a keyword list, for YAML configs (``stages: [{class_path: ...}, ...]``); give one
            form or the other.

    Raises:
        FederatedConfigError: If no stage is given, an argument is not a stage, or a terminal stage is not last.

    Example:
        >>> from lightning_fl.codecs import Kashin, StochasticQuantizer
        >>> codec = Chain(Kashin(), StochasticQuantizer(bits=4))
        >>> x = torch.randn(1000)
        >>> p = codec.encode(x, seed=0)
        >>> p.body.numel(), len(p.header)  # 2048 coefficients at 4 bits; meta 6 + seed 8 + lo/hi 8
        (1024, 22)
        >>> codec.decode(p).shape
        torch.Size([1000])
    """

    def __init__(self, *stage_args: Stage | Chain, stages: Sequence[Stage | Chain] = ()) -> None:
        if stage_args and stages:
            raise FederatedConfigError(
                f"give Chain's stages either positionally or as stages=[...], not both; got {len(stage_args)} "
                f"positional and {len(stages)} in stages"
            )
        flat: list[Stage] = []
        for stage in stage_args or tuple(stages):
            if isinstance(stage, Chain):
                flat.extend(stage.stages)
            elif isinstance(stage, Stage):
                flat.append(stage)
            else:
                raise FederatedConfigError(
                    f"Chain stages must be codec stages such as RandomHadamard() or StochasticQuantizer(bits=4), "
                    f"got {type(stage).__name__}"
                )
        if not flat:
            raise FederatedConfigError("Chain needs at least one stage, got none (use Identity() to send raw bytes)")
        self.stages: tuple[Stage, ...] = tuple(flat)
        self._transforms, self._terminal = split_stages(flat)
        self.lossless = all(stage.lossless for stage in flat)
        self.unbiased = all(stage.unbiased for stage in flat)
        self._name = f"Chain({', '.join(repr(stage) for stage in flat)})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def terminal(self) -> TerminalStage:
        """The stage that writes the body (a raw float serialiser when the chain ends with a transform)."""
        return self._terminal

    def encode(self, x: torch.Tensor, seed: int, key: str | None = None) -> Payload:
        return encode_stages(self._name, self._transforms, self._terminal, x, seed)

    def decode(self, payload: Payload) -> torch.Tensor:
        return decode_stages(self._name, self._transforms, self._terminal, payload)

    def check_payload_for(self, payload: Payload, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Refuse, before decoding, a payload that is not this chain's encoding of a ``shape`` ``dtype`` tensor: the
        meta must be exactly ``shape`` and ``dtype``, and every stage's header and the body length must be what the
        stages imply for that shape (padded Hadamard length, Kashin frame, kept counts, packed bits)."""
        check_stages_for(self._name, self._transforms, self._terminal, payload, shape, dtype)

    def __repr__(self) -> str:
        return self._name
