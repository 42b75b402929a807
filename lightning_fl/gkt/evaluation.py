"""Held-out accuracy of FedGKT's two kinds of model: each client's own small model, and the combined model.

The combined model of client k is ``server_body(H_k(x))``: client k's stem (the first output of its forward is
the logits, the second ``H``) followed by the server body. Clients keep different stems, so there is one
combined model per client; :class:`GKTEvaluator` averages over the clients it is given (each client weighs the
same, every client sees the same held-out samples).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class GKTEvaluator:
    """Accumulates correct predictions of several client models and their combined models over batches.

    Counts stay on the models' device (no host synchronisation per batch) until :meth:`compute`.

    Args:
        clients: ``(client_id, model)`` pairs; every model maps a batch to ``(logits, H)`` and is in eval mode.
        body: The server body, mapping ``H`` to logits.

    Example:
        >>> from lightning_fl.gkt.resnet import ResNet8Client, ResNetServerBody
        >>> ev = GKTEvaluator([(0, ResNet8Client(1, 3).eval())], ResNetServerBody(11, 3).eval())
        >>> ev.update(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
        >>> sorted(ev.compute())
        ['client_acc', 'client_acc_max', 'client_acc_min', 'combined_acc', 'combined_loss']
    """

    def __init__(self, clients: list[tuple[int, nn.Module]], body: nn.Module) -> None:
        self.clients = clients
        self.body = body
        self.samples = 0
        self._client_correct: list[torch.Tensor] = []
        self._combined_correct: list[torch.Tensor] = []
        self._combined_loss: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Score every client model and its combined model on one batch."""
        first = not self._client_correct
        for i, (_, model) in enumerate(self.clients):
            logits, h = model(x)
            combined = self.body(h)
            client_correct = (logits.argmax(-1) == y).sum()
            combined_correct = (combined.argmax(-1) == y).sum()
            loss = F.cross_entropy(combined.float(), y, reduction="sum")
            if first:
                self._client_correct.append(client_correct)
                self._combined_correct.append(combined_correct)
                self._combined_loss.append(loss)
            else:
                self._client_correct[i] += client_correct
                self._combined_correct[i] += combined_correct
                self._combined_loss[i] += loss
        self.samples += len(y)

    def per_client(self) -> dict[int, tuple[float, float]]:
        """``{client_id: (client_acc, combined_acc)}``."""
        n = max(self.samples, 1)
        return {
            cid: (float(self._client_correct[i]) / n, float(self._combined_correct[i]) / n)
            for i, (cid, _) in enumerate(self.clients)
        }

    def compute(self) -> dict[str, float]:
        """Means over clients of the client and combined accuracies, the combined loss, and the client extremes."""
        if not self.samples or not self.clients:
            return {}
        accs = self.per_client()
        client = [a for a, _ in accs.values()]
        combined = [c for _, c in accs.values()]
        loss = sum(float(v) for v in self._combined_loss) / (self.samples * len(self.clients))
        return {
            "client_acc": sum(client) / len(client),
            "client_acc_min": min(client),
            "client_acc_max": max(client),
            "combined_acc": sum(combined) / len(combined),
            "combined_loss": loss,
        }


@torch.no_grad()
def accuracy_counts(model: nn.Module, batches: Iterable[Any], device: torch.device) -> tuple[int, int]:
    """``(correct, samples)`` of a ``(logits, H)`` model over an iterable of ``(x, y)`` batches.

    Example:
        >>> from lightning_fl.gkt.resnet import ResNet8Client
        >>> accuracy_counts(ResNet8Client(1, 3).eval(), [(torch.zeros(2, 1, 8, 8), torch.zeros(2).long())],
        ...                 torch.device("cpu"))[1]
        2
    """
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    for x, y in batches:
        logits, _ = model(x.to(device))
        correct += (logits.argmax(-1) == y.to(device)).sum()
        total += len(y)
    return int(correct), total


def client_models(template: nn.Module, states: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, nn.Module]]:
    """One eval-mode copy of ``template`` per ``(client_id, model_state_dict)``.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> [(cid, m.training) for cid, m in client_models(net, [(4, net.state_dict())])]
        [(4, False)]
    """
    models = []
    for client_id, state in states:
        model = copy.deepcopy(template)
        model.load_state_dict(state)
        models.append((client_id, model.eval()))
    return models
