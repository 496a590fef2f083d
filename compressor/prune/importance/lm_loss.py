"""The next-token loss of a calibration batch without its full logits in memory.

A model's own `.loss` materialises the logits of every position over the whole vocabulary (and their softmax and
gradient in the backward): for LLaVA-1.5's calibration samples (576 image tokens + text, 32k vocabulary) that is
the biggest tensor of Taylor scoring after the weights. Here the LM head is bypassed during the model's forward (it
returns a one-column placeholder and its input, the final normalised hidden state, is kept), and the loss is
computed over position chunks: one chunk's logits exist at a time. A frozen head (Taylor scoring's: only decoder
weights are scored) gets its hidden-state gradient in the same pass, so no chunk is computed twice; a head that
requires grad goes chunk by chunk under activation checkpointing. The value equals the model's mean next-token
cross-entropy over labelled positions (tested), and so do the gradients.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK_BYTES = 8 << 20  # one chunk's fp32 logits: 8 MB (64 positions of a 32k vocabulary, 42 of SmolLM2's 49k)


def chunk_positions(vocab: int, batch: int = 1) -> int:
    return max(1, CHUNK_BYTES // (4 * vocab * batch))


def _softcap(config) -> float | None:
    """The tanh cap the model's own forward puts on its logits (Gemma's causal LMs read it from their config; the
    multimodal Gemma 3 class applies none, whatever its text config says)."""
    return getattr(config, "final_logit_softcapping", None)


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, bias, labels: torch.Tensor, cap) -> torch.Tensor:
    logits = F.linear(hidden.to(weight.device), weight, bias).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )


class _FrozenHeadCE(torch.autograd.Function):
    """Σ cross-entropy of a frozen LM head over position chunks, its gradient for the hidden state made in the
    same pass: each chunk's logits are computed once (a checkpointed chunk computes them twice), and only the
    [batch, seq, hidden] gradient is kept for the backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, cap, chunk):
        total = torch.zeros((), dtype=torch.float32, device=weight.device)
        grad = torch.zeros_like(hidden)
        for start in range(0, hidden.shape[1], chunk):
            part = labels[:, start : start + chunk]
            valid = part != -100
            if not valid.any():
                continue
            logits = F.linear(hidden[:, start : start + chunk].to(weight.device), weight, bias).float()
            capped = None
            if cap:
                capped = torch.tanh(logits / cap)
                logits = capped * cap
            lse = torch.logsumexp(logits, dim=-1)
            target = part.clamp(min=0).unsqueeze(-1)
            total += ((lse - logits.gather(-1, target).squeeze(-1)) * valid).sum()
            d = torch.softmax(logits, dim=-1)  # d loss / d logits = softmax − one-hot, on labelled positions
            d.scatter_add_(-1, target, -torch.ones_like(target, dtype=d.dtype))
            d *= valid.unsqueeze(-1)
            if capped is not None:
                d *= 1 - capped.square()
            grad[:, start : start + chunk] = (d.to(weight.dtype) @ weight).to(grad.device, grad.dtype)
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return grad * g.to(grad.dtype), None, None, None, None, None


@contextmanager
def bypassed_head(head: torch.nn.Module, store: dict[str, torch.Tensor]):
    """The LM head returns a [..., 1] placeholder and keeps its input in `store["hidden"]`."""

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        store["hidden"] = hidden
        return hidden[..., :1] * 0

    own = vars(head).get("forward")
    head.forward = forward
    try:
        yield
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


def supports_chunked_loss(model) -> bool:
    """A plain linear LM head whose weight is in memory (accelerate's offloaded heads keep a meta tensor between
    forwards: those models use their own loss)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return isinstance(head, torch.nn.Linear) and head.weight.device.type != "meta"


def chunked_lm_loss(
    model, inputs: dict[str, Any], labels: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy of `model` on `inputs` (no labels in them), one logits chunk at a time.

    Falls back to the model's own loss when the final hidden state does not line up with `labels` (a remote-code
    model that splices image features into a longer sequence than its labels).
    """
    head = model.get_output_embeddings()
    store: dict[str, torch.Tensor] = {}
    with bypassed_head(head, store):
        model(**inputs, use_cache=False)
    hidden = store.get("hidden")
    if hidden is None or hidden.shape[:2] != labels.shape:
        return model(**inputs, labels=labels, use_cache=False).loss
    shifted = F.pad(labels[:, 1:], (0, 1), value=-100).to(hidden.device)
    count = (shifted != -100).sum()
    cap = _softcap(model.config)
    chunk = chunk or chunk_positions(head.weight.shape[0], hidden.shape[0])
    if not head.weight.requires_grad and (head.bias is None or not head.bias.requires_grad):
        total = _FrozenHeadCE.apply(hidden, head.weight, head.bias, shifted, cap, chunk)
        return total / count.clamp(min=1).to(total.device)
    total = head.weight.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[1], chunk):
        part = shifted[:, start : start + chunk]
        if not (part != -100).any():
            continue
        total = total + checkpoint(
            _chunk_loss,
            hidden[:, start : start + chunk],
            head.weight,
            head.bias,
            part,
            cap,
            use_reentrant=False,
        )
    return total / count.clamp(min=1).to(total.device)
