"""Codecs: how tensors travel between the server and the clients."""

from lightning_fl.codecs.base import Codec, Identity, Payload

__all__ = ["Codec", "Identity", "Payload"]
