"""The server's half of a FedGKT round: train the body on the received features, send logits back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from lightning_fl.federation.round_log import RoundStats
from lightning_fl.gkt.losses import gkt_loss
from lightning_fl.gkt.store import SampleLogitTable
from lightning_fl.gkt.transfer import ClientUpload, downlink_logits
from lightning_fl.seeding import generator

if TYPE_CHECKING:
    from lightning_fl.gkt.module import FedGKTModule


def server_minibatches(num_samples: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of ``range(num_samples)`` cut into minibatches (the last may be smaller).

    Example:
        >>> [len(b) for b in server_minibatches(10, 4, torch.Generator().manual_seed(0))]
        [4, 4, 2]
    """
    return list(torch.randperm(num_samples, generator=gen).split(batch_size))


class ServerRound:
    """What the server collects during one round, and what it does at the round's end.

    Attributes:
        round_idx: The round.
        uploads: The clients' messages, in the order the clients finished.
        client_seconds: Wall time spent in client training and feature extraction.
        server_seconds: Wall time spent in server training and inference.
        local_correct: Correct predictions of the round's clients on their own local validation samples.
        local_total: Those local validation samples.
    """

    def __init__(self, round_idx: int) -> None:
        self.round_idx = round_idx
        self.uploads: list[ClientUpload] = []
        self.client_seconds = 0.0
        self.server_seconds = 0.0
        self.local_correct = 0
        self.local_total = 0
        self._client_loss: list[torch.Tensor] = []
        self._client_samples = 0
        self._server: dict[str, float] = {"loss": 0.0, "kd": 0.0, "samples": 0.0}

    def add_client_loss(self, loss: torch.Tensor, kd: torch.Tensor, samples: int) -> None:
        """Accumulate one client step's loss and KD term (device tensors, no synchronisation)."""
        self._client_loss.append(torch.stack([loss.float() * samples, kd.float() * samples]))
        self._client_samples += samples

    def train_body(self, module: FedGKTModule, optimizer: Any, seed: int) -> None:
        """Train ``module.server_body`` for ``server_epochs`` on every feature of the round:
        ``CE(z_s, y) + beta * KD(z_s || z_c)``, minibatches shuffled from ``(seed, "gkt_server", round, epoch)``.
        """
        if not self.uploads:
            return
        start = time.perf_counter()
        hp = module.hparams
        features = torch.cat([u.features for u in self.uploads])
        client_logits = torch.cat([u.logits for u in self.uploads])
        labels = torch.cat([u.labels for u in self.uploads])
        body, device = module.server_body, module.device
        body.train()
        loss_sum = torch.zeros(2, device=device)
        seen = 0
        for epoch in range(hp["server_epochs"]):
            gen = generator(seed, "gkt_server", self.round_idx, epoch)
            for index in server_minibatches(len(labels), hp["server_batch_size"], gen):
                h = features[index].to(device, torch.float32, non_blocking=True)
                logits = body(h)
                teacher = client_logits[index].to(device) if hp["beta"] > 0 else None
                loss, kd = gkt_loss(logits, labels[index].to(device), teacher, hp["beta"], hp["temperature"])
                optimizer.zero_grad()
                module.manual_backward(loss)
                optimizer.step()
                loss_sum += torch.stack([loss.detach(), kd]) * len(index)
                seen += len(index)
        totals = loss_sum.tolist()
        self._server = {"loss": totals[0], "kd": totals[1], "samples": float(seen)}
        self.server_seconds += time.perf_counter() - start

    @torch.no_grad()
    def send_logits(self, module: FedGKTModule, table: SampleLogitTable) -> int:
        """Compute the body's logits (eval mode) for every received sample, record them in ``table`` by sample id
        (what each client now holds) and return the downlink bytes."""
        start = time.perf_counter()
        body, device = module.server_body, module.device
        size = module.hparams["eval_batch_size"]
        nbytes = 0
        body.eval()
        try:
            for upload in self.uploads:
                chunks = [body(f.to(device, torch.float32)).float() for f in upload.features.split(size)]
                sent, n = downlink_logits(torch.cat(chunks))
                table.put(upload.ids, sent)
                nbytes += n
        finally:
            body.train()
        self.server_seconds += time.perf_counter() - start
        return nbytes

    @property
    def uplink_bytes(self) -> int:
        """Bytes of all uploads of the round."""
        return sum(u.nbytes for u in self.uploads)

    def metrics(
        self, downlink_bytes: int, uplink_total: int, downlink_total: int, round_start: float
    ) -> dict[str, float]:
        """The round's ``fl/`` scalars (:class:`RoundStats`) and ``gkt/`` scalars.

        Args:
            downlink_bytes: Bytes of the logits sent back this round.
            uplink_total: Uplink bytes so far, this round included.
            downlink_total: Downlink bytes so far, this round included.
            round_start: ``time.perf_counter()`` at the round's start.
        """
        dense = sum(u.nbytes - u.features.nbytes + u.features.numel() * 4 for u in self.uploads)
        stats = RoundStats(
            round_idx=self.round_idx, clients=len(self.uploads), uplink_bytes=self.uplink_bytes,
            downlink_bytes=downlink_bytes, uplink_bytes_total=uplink_total, downlink_bytes_total=downlink_total,
            uplink_dense_bytes=dense, downlink_dense_bytes=downlink_bytes, rejected_updates=0,
            round_seconds=time.perf_counter() - round_start,
        )
        # the downlink (float32 logits) is always dense
        return {**stats.metrics(), **self._gkt_metrics()}

    def _gkt_metrics(self) -> dict[str, float]:
        client = torch.stack(self._client_loss).sum(0).tolist() if self._client_loss else [0.0, 0.0]
        n_client = max(self._client_samples, 1)
        n_server = max(self._server["samples"], 1.0)
        out = {
            "gkt/client_loss": client[0] / n_client,
            "gkt/client_kd": client[1] / n_client,
            "gkt/server_loss": self._server["loss"] / n_server,
            "gkt/server_kd": self._server["kd"] / n_server,
            "gkt/samples": float(sum(u.num_samples for u in self.uploads)),
            "gkt/client_seconds": self.client_seconds,
            "gkt/server_seconds": self.server_seconds,
        }
        if self.local_total:
            out["gkt/client_local_acc"] = self.local_correct / self.local_total
        return out
