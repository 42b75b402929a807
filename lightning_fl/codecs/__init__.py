"""Codecs: how tensors travel between the server and the clients.

Elementary stages (each a :class:`Codec` on its own) compose with :class:`Chain`; :class:`ErrorFeedback`
wraps any codec; :class:`TensorPolicy` decides which tensors a codec applies to.
"""

from lightning_fl.codecs.base import Codec, Identity, Payload
from lightning_fl.codecs.bitpack import pack_bits, packed_nbytes, unpack_bits
from lightning_fl.codecs.cast import BFloat16, Cast, Float16
from lightning_fl.codecs.chain import Chain
from lightning_fl.codecs.error_feedback import ErrorFeedback
from lightning_fl.codecs.hadamard import RandomHadamard, fwht, next_power_of_two
from lightning_fl.codecs.kashin import Kashin
from lightning_fl.codecs.masked_noise import MaskedNoiseCodec
from lightning_fl.codecs.policy import TensorPolicy
from lightning_fl.codecs.quantize import SignCompressor, StochasticQuantizer
from lightning_fl.codecs.sparsify import MagnitudePrune, TopK, index_dtype
from lightning_fl.codecs.stage import (
    RawSerializer,
    Stage,
    StageContext,
    StageLayout,
    StageOutput,
    TerminalStage,
    TransformStage,
)
from lightning_fl.codecs.subsample import Subsample

__all__ = [
    "BFloat16",
    "Cast",
    "Chain",
    "Codec",
    "ErrorFeedback",
    "Float16",
    "Identity",
    "Kashin",
    "MagnitudePrune",
    "MaskedNoiseCodec",
    "Payload",
    "RandomHadamard",
    "RawSerializer",
    "SignCompressor",
    "Stage",
    "StageContext",
    "StageLayout",
    "StageOutput",
    "StochasticQuantizer",
    "Subsample",
    "TensorPolicy",
    "TerminalStage",
    "TopK",
    "TransformStage",
    "fwht",
    "index_dtype",
    "next_power_of_two",
    "pack_bits",
    "packed_nbytes",
    "unpack_bits",
]
