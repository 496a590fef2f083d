"""Loss terms of recovery training: pure functions over tensors, and the registry of named terms.

Every function takes the student's tensors first and the teacher's second, detaches the teacher (gradients
reach only the student), computes in float32, and returns a sum over the counted tokens divided by
`num_tokens` (their count when None). Passing the count of all ranks keeps the mean exact under DDP.
torch is imported inside the functions so that `compressor.recover.config` can check loss names cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compressor.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def _normaliser(mask: Tensor, num_tokens: Tensor | int | None) -> Tensor:
    import torch

    count = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, device=mask.device)
    return count.clamp(min=1).float()


def cross_entropy(logits: Tensor, labels: Tensor, num_items: Tensor | int | None = None) -> Tensor:
    """Next-token cross-entropy summed over labels != -100, divided by `num_items` (their count if None)."""
    import torch.nn.functional as F

    logits = logits[:, :-1].float()
    labels = labels[:, 1:].to(logits.device)
    mask = labels != -100
    nll = F.cross_entropy(logits.flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none")
    return (nll * mask.flatten()).sum() / _normaliser(mask, num_items)


def hidden_mse(
    student: Tensor, teacher: Tensor, mask: Tensor, num_tokens: Tensor | int | None = None
) -> Tensor:
    """Mean squared error per token (averaged over the hidden size), over the tokens where `mask` is set."""
    teacher = teacher.detach().to(student.device)
    per_token = (student.float() - teacher.float()).pow(2).mean(-1)
    return (per_token * mask).sum() / _normaliser(mask, num_tokens)


def hidden_cosine(
    student: Tensor, teacher: Tensor, mask: Tensor, num_tokens: Tensor | int | None = None
) -> Tensor:
    """1 - cosine similarity per token, over the tokens where `mask` is set."""
    import torch.nn.functional as F

    teacher = teacher.detach().to(student.device)
    per_token = 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)
    return (per_token * mask).sum() / _normaliser(mask, num_tokens)


def logit_kl(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor,
    temperature: float = 2.0,
    direction: str = "forward",
    num_tokens: Tensor | int | None = None,
) -> Tensor:
    """KL between the temperature-softened next-token distributions, times T^2 (Hinton et al.).

    forward: KL(teacher || student), the seed's `kl`; reverse: KL(student || teacher), its `rkl`.
    """
    import torch.nn.functional as F

    teacher = teacher.detach().to(student.device)
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(
            f"student vocabulary {student.shape[-1]} != teacher vocabulary {teacher.shape[-1]}: logit_kl "
            "needs the same tokenizer; use hidden_mse instead"
        )
    s = F.log_softmax(student.float() / temperature, dim=-1)
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    if direction == "forward":
        per_token = (t.exp() * (t - s)).sum(-1)
    elif direction == "reverse":
        per_token = (s.exp() * (s - t)).sum(-1)
    else:
        raise ValueError(f"direction {direction!r} must be forward or reverse")
    return (per_token * mask).sum() / _normaliser(mask, num_tokens) * temperature**2


# ---------------------------------------------------------------------------- named terms


@dataclass
class Side:
    """What one model's forward gave the loss: hidden states (final normalised one first), logits, CE."""

    hidden: list[Tensor] = field(default_factory=list)
    logits: Tensor | None = None
    ce: Tensor | None = None


@dataclass
class Batch:
    """What the terms need from the batch: the non-padding mask and the token count that divides sums."""

    mask: Tensor
    num_tokens: Tensor | int | None = None
    temperature: float = 2.0
    direction: str = "forward"


@dataclass(frozen=True)
class Term:
    fn: Callable[[Side, Side, Batch], Tensor]
    uses_teacher: bool = True
    uses_logits: bool = False  # needs the logits of both models (the teacher then runs its LM head)


LOSSES: Registry[Term] = Registry("loss")


def _pairs(fn: Callable[..., Tensor]) -> Callable[[Side, Side, Batch], Tensor]:
    """A hidden-state term averaged over the matched pairs (final state + any extra layers)."""

    def term(student: Side, teacher: Side, batch: Batch) -> Tensor:
        values = [fn(s, t, batch.mask, batch.num_tokens) for s, t in zip(student.hidden, teacher.hidden)]
        return sum(values[1:], values[0]) / len(values)

    return term


def _ce(student: Side, teacher: Side, batch: Batch) -> Tensor:
    if student.ce is None:
        raise RuntimeError("internal error: the student's cross-entropy was not computed")
    return student.ce


def _kl(student: Side, teacher: Side, batch: Batch) -> Tensor:
    return logit_kl(
        student.logits, teacher.logits, batch.mask, batch.temperature, batch.direction, batch.num_tokens
    )


LOSSES.register("ce")(Term(_ce, uses_teacher=False))
LOSSES.register("hidden_mse")(Term(_pairs(hidden_mse)))
LOSSES.register("hidden_cosine")(Term(_pairs(hidden_cosine)))
LOSSES.register("logit_kl")(Term(_kl, uses_logits=True))


def combine(
    weights: dict[str, float],
    student: Side,
    teacher: Side,
    batch: Batch,
    factors: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """sum_k w_k * factor_k * term_k, and each term's value (unweighted, unscaled) for logging.

    The factors carry the normalisation across gradient-accumulation steps and ranks (see the trainer).
    """
    factors = factors or {}
    total: Any = 0.0
    parts: dict[str, float] = {}
    for name, weight in weights.items():
        if weight == 0:
            continue
        value = LOSSES.get(name).fn(student, teacher, batch)
        parts[name] = float(value.detach())
        total = total + (weight * factors.get(name, 1.0)) * value
    return total, parts
