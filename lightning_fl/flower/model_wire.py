"""The model's tensors on the wire both ways, chosen as ``lightning-fl fit`` chooses them."""

from __future__ import annotations

import torch

from lightning_fl.federation.flat import FlatState
from lightning_fl.federation.host import FederatedAveraging
from lightning_fl.flower.payloads import WireTensors

__all__ = ["ModelWire"]


class ModelWire:
    """What travels between the server and a client: every floating tensor of the model (through the codec the
    config's policy picks for it, as :meth:`~lightning_fl.federation.link.Link.codecs_for` does) and every integer
    buffer (raw bytes, as :class:`~lightning_fl.federation.exchange.ClientExchange` counts them).

    Down goes the global model; up comes the client's update ``w_client - w_received`` in the global state's dtype
    and its integer-buffer increments.

    Args:
        state: The model as flat tensors.
        averaging: The config's server callback (its links hold the codecs and the tensor policy).
    """

    def __init__(self, state: FlatState, averaging: FederatedAveraging) -> None:
        self.state = state
        float_names = [s.name for s in state.float_specs]
        int_names = [s.name for s in state.int_specs]
        self.names = float_names + int_names
        self.num_float = len(float_names)
        tensors: list[torch.Tensor] = [*state.views, *state.int_views]
        raw = [averaging.uplink.raw] * len(int_names)
        down = averaging.downlink.codecs_for(float_names, state.views) + raw
        up = averaging.uplink.codecs_for(float_names, state.views) + raw
        self.downlink = WireTensors(self.names, tensors, down, "downlink")
        self.uplink = WireTensors(self.names, tensors, up, "uplink")
        #: Bytes of the whole model as raw float32: the reference of the compression ratios.
        self.dense_bytes = averaging.uplink.dense_bytes(self.names, tensors)
