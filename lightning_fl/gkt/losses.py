"""The two losses of group knowledge transfer: cross-entropy plus temperature-scaled distillation.

``KD(a || b) = T^2 * KL(softmax(b / T) || softmax(a / T))``: the student with logits ``a`` is pulled toward the
teacher with logits ``b``; the teacher receives no gradient. The ``T^2`` factor keeps gradient magnitudes
comparable across temperatures (Hinton et al. 2015). Everything is computed in float32, whatever the autocast
dtype of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_fl.checks import check_positive
from lightning_fl.exceptions import FederatedConfigError


def kd_per_sample(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` for every row, shape (N,).

    Args:
        student: Student logits (N, C); gradients flow into them.
        teacher: Teacher logits (N, C); detached.
        temperature: Softmax temperature T > 0.

    Raises:
        FederatedConfigError: If ``temperature`` is not positive or the shapes differ.

    Example:
        >>> z = torch.tensor([[1.0, 2.0, 3.0]])
        >>> kd_per_sample(z, z).abs().max().item() < 1e-6
        True
    """
    check_positive("temperature", temperature)
    if student.shape != teacher.shape:
        raise FederatedConfigError(
            f"student and teacher logits must have the same shape, got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}"
        )
    log_p_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.detach().float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return kl * temperature**2


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 3.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean KD over the batch; rows where ``mask`` is False (no teacher) count as 0 but still in the mean.

    Dividing by the whole batch (not by the rows that have a teacher) keeps the KD weight per sample fixed, the
    same convention as the cross-entropy it is added to.

    Args:
        student: Student logits (N, C).
        teacher: Teacher logits (N, C); rows that ``mask`` excludes are ignored.
        temperature: Softmax temperature T > 0.
        mask: Boolean (N,): which rows have a teacher. ``None``: all of them.

    Returns:
        A scalar float32 tensor.

    Example:
        >>> a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 3.0]])
        >>> round(kd_loss(a, b, temperature=1.0).item(), 4)  # KL([0.047, 0.953] || [0.5, 0.5])
        0.5023
    """
    per_sample = kd_per_sample(student, teacher, temperature)
    if mask is not None:
        per_sample = torch.where(mask.to(per_sample.device), per_sample, per_sample.new_zeros(()))
    return per_sample.mean()


def gkt_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None,
    weight: float,
    temperature: float = 3.0,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``CE(logits, labels) + weight * KD(logits || teacher)``; with no teacher (the first round), CE alone.

    Args:
        logits: Student logits (N, C).
        labels: Integer labels (N,).
        teacher: Teacher logits (N, C), or ``None`` when there is none yet.
        weight: Weight of the KD term (alpha on the client, beta on the server).
        temperature: Softmax temperature T.
        mask: Which rows of ``teacher`` are valid (``None``: all).

    Returns:
        ``(loss, kd)``: the total loss and the unweighted KD term (0 without a teacher), both float32 scalars.

    Example:
        >>> z, y = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
        >>> loss, kd = gkt_loss(z, y, None, weight=1.0)
        >>> torch.allclose(loss, F.cross_entropy(z, y)), kd.item()
        (True, 0.0)
    """
    ce = F.cross_entropy(logits.float(), labels)
    if teacher is None or weight == 0.0 or (mask is not None and not bool(mask.any())):
        return ce, ce.new_zeros(())
    kd = kd_loss(logits, teacher, temperature, mask)
    return ce + weight * kd, kd.detach()
