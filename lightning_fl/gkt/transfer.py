"""What travels between a FedGKT client and the server, and how many bytes it takes.

Up, per training sample: the feature map ``H`` (float32, float16, or any :class:`~lightning_fl.codecs.Codec`'s
payload), the client's logits (float32), the label (int64) and the sample id (int64). Down: the server's logits
(float32) for the same samples, in the order the client sent them, so no ids travel back. The byte counts are the
``nbytes`` of the tensors (or the codec payloads, header included) that are actually produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from lightning_fl.codecs.base import Codec
from lightning_fl.datamodules.loaders import make_batch_loader
from lightning_fl.exceptions import FederatedConfigError, FederatedRuntimeError

FeatureDtype = Literal["float32", "float16"]
FEATURE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
_FP16_MAX = torch.finfo(torch.float16).max


@dataclass(frozen=True)
class ClientUpload:
    """One client's message to the server in one round, as the server received it (CPU tensors).

    Attributes:
        client_id: The sender.
        ids: Sample ids (dataset indices), int64 (N,).
        features: Decoded feature maps ``H`` (N, C, h, w), in the dtype they travelled in (float32 after a codec).
        logits: Client logits, float32 (N, classes).
        labels: Labels, int64 (N,).
        nbytes: Bytes on the wire.
    """

    client_id: int
    ids: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    nbytes: int

    @property
    def num_samples(self) -> int:
        """Samples in the message."""
        return len(self.ids)


class FeatureLink:
    """Sends feature maps from a client to the server: cast to ``feature_dtype``, or through ``codec``.

    float16 saturates at +-65504 instead of overflowing to infinity (as :class:`~lightning_fl.codecs.Cast` does).

    Args:
        feature_dtype: ``"float32"`` or ``"float16"`` (2 bytes per element).
        codec: Any lightning-fl codec applied to each client's whole feature tensor instead of the cast; its
            payload bytes, header included, are counted. Needs ``feature_dtype="float32"``.

    Raises:
        FederatedConfigError: On an unknown ``feature_dtype``, a ``codec`` that is not a Codec, or both options.

    Example:
        >>> link = FeatureLink("float16")
        >>> received, nbytes = link.send(torch.ones(2, 16, 8, 8), seed=0)
        >>> received.dtype, nbytes == 2 * 16 * 8 * 8 * 2
        (torch.float16, True)
    """

    def __init__(self, feature_dtype: FeatureDtype = "float32", codec: Codec | None = None) -> None:
        if feature_dtype not in FEATURE_DTYPES:
            raise FederatedConfigError(f"feature_dtype must be one of {list(FEATURE_DTYPES)}, got {feature_dtype!r}")
        if codec is not None and not isinstance(codec, Codec):
            raise FederatedConfigError(f"feature_codec must be a lightning_fl Codec, got {type(codec).__name__}")
        if codec is not None and feature_dtype != "float32":
            raise FederatedConfigError(
                f"feature_codec and feature_dtype are alternatives: with a codec, feature_dtype must be 'float32', "
                f"got {feature_dtype!r}"
            )
        if codec is not None and codec.stateful:
            raise FederatedConfigError(f"feature_codec must be stateless (features differ every round), got {codec!r}")
        self.dtype = FEATURE_DTYPES[feature_dtype]
        self.codec = codec

    def send(self, features: torch.Tensor, seed: int) -> tuple[torch.Tensor, int]:
        """Encode ``features`` as the client would and decode them as the server would.

        Returns:
            ``(received, nbytes)``: the server's copy (CPU) and the bytes on the wire.
        """
        if self.codec is not None:
            payload = self.codec.encode(features.detach().float(), seed=seed)
            return self.codec.decode(payload).cpu(), payload.nbytes
        x = features.detach()
        if self.dtype == torch.float16:
            x = x.float().clamp(-_FP16_MAX, _FP16_MAX)
        sent = x.to(device="cpu", dtype=self.dtype)
        return sent, sent.nbytes


def make_upload(
    client_id: int,
    ids: torch.Tensor,
    features: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    link: FeatureLink,
    seed: int,
) -> ClientUpload:
    """Package one client's extracted features, logits and labels and count their bytes.

    Example:
        >>> n, c = 3, 10
        >>> up = make_upload(0, torch.arange(n), torch.zeros(n, 16, 8, 8), torch.zeros(n, c),
        ...                  torch.zeros(n, dtype=torch.long), FeatureLink(), seed=0)
        >>> up.nbytes == n * (16 * 8 * 8 * 4 + c * 4 + 8 + 8)
        True
    """
    ids = ids.to(device="cpu", dtype=torch.int64)
    labels = labels.to(device="cpu", dtype=torch.int64)
    logits = logits.detach().to(device="cpu", dtype=torch.float32)
    received, feature_bytes = link.send(features, seed)
    nbytes = feature_bytes + logits.nbytes + labels.nbytes + ids.nbytes
    return ClientUpload(client_id, ids, received, logits, labels, nbytes)


def downlink_logits(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The server's logits as sent back: float32 on CPU, and their bytes.

    Example:
        >>> downlink_logits(torch.zeros(4, 10))[1]
        160
    """
    sent = logits.detach().to(device="cpu", dtype=torch.float32)
    return sent, sent.nbytes


def check_batch_ids(targets: torch.Tensor, ids: torch.Tensor, y: torch.Tensor, batch_idx: int, round_idx: int) -> None:
    """Samples are keyed by dataset index (the plan's index arrays): make sure the loader followed the plan.

    Raises:
        FederatedRuntimeError: When the batch's labels are not those of the samples the plan lists for it.
    """
    if len(ids) != len(y) or not torch.equal(targets[ids], y.detach().cpu().long()):
        raise FederatedRuntimeError(
            f"batch {batch_idx} of round {round_idx} does not hold the samples the data module's plan lists for it; "
            "FedGKT keys features and logits by sample id, so the train loader must be the FederatedDataModule's own"
        )


def index_loader(dataset: Dataset, indices: np.ndarray, batch_size: int) -> Any:
    """Sequential ``(x, y)`` batches of ``dataset[indices]``, ``batch_size`` at a time.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(5.0), torch.arange(5))
        >>> [y.tolist() for _, y in index_loader(ds, np.array([4, 0, 2]), 2)]
        [[4, 0], [2]]
    """
    return make_batch_loader(dataset, [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)])


@torch.no_grad()
def extract_upload(
    client: nn.Module,
    client_id: int,
    dataset: Dataset,
    indices: np.ndarray,
    batch_size: int,
    device: torch.device,
    link: FeatureLink,
    seed: int,
) -> ClientUpload:
    """Run ``client`` (as it is: put it in eval mode first) over its samples and package what it sends.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from lightning_fl.gkt.resnet import ResNet8Client
        >>> ds = TensorDataset(torch.randn(6, 1, 8, 8), torch.zeros(6, dtype=torch.long))
        >>> up = extract_upload(ResNet8Client(1, 3).eval(), 0, ds, np.array([5, 1]), 4, torch.device("cpu"),
        ...                     FeatureLink(), seed=0)
        >>> up.ids.tolist(), tuple(up.features.shape), up.nbytes == 2 * (16 * 64 * 4 + 3 * 4 + 16)
        ([5, 1], (2, 16, 8, 8), True)
    """
    features, logits, labels = [], [], []
    for x, y in index_loader(dataset, indices, batch_size):
        z, h = client(x.to(device))
        features.append(h.float().cpu())
        logits.append(z.float().cpu())
        labels.append(y)
    ids = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    return make_upload(client_id, ids, torch.cat(features), torch.cat(logits), torch.cat(labels), link, seed)
