"""The distillation loss terms are pure functions: zero on identical inputs, masks respected, T^2 scaling,
gradients only to the student, and sums that split across ranks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compressor.errors import CompressorError
from compressor.recover import losses


def _states(seed: int = 0, shape=(2, 5, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)


@pytest.mark.parametrize("fn", [losses.hidden_mse, losses.hidden_cosine, losses.logit_kl])
def test_zero_on_identical_inputs(fn) -> None:
    s, t = _states()
    assert fn(s, s.clone(), MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert fn(s, t, MASK).item() > 0.01


def test_hidden_mse_is_the_mean_over_counted_tokens() -> None:
    s, t = _states()
    expected = F.mse_loss(s[MASK], t[MASK])
    assert losses.hidden_mse(s, t, MASK).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("fn", [losses.hidden_mse, losses.hidden_cosine, losses.logit_kl])
def test_masked_positions_do_not_count(fn) -> None:
    s, t = _states()
    noisy = t.clone()
    noisy[~MASK] = 1e4  # garbage where the mask is off (padding)
    assert fn(s, noisy, MASK).item() == pytest.approx(fn(s, t, MASK).item(), rel=1e-6)


def test_logit_kl_scales_with_t_squared_and_matches_the_definition() -> None:
    s, t = _states(shape=(2, 5, 11))
    for T in (1.0, 2.0, 4.0):
        p_t = F.softmax(t / T, -1)
        kl = (p_t * (F.log_softmax(t / T, -1) - F.log_softmax(s / T, -1))).sum(-1)
        expected = kl[MASK].mean() * T**2
        assert losses.logit_kl(s, t, MASK, temperature=T).item() == pytest.approx(expected.item(), rel=1e-5)
    reverse = losses.logit_kl(s, t, MASK, temperature=2.0, direction="reverse")
    swapped = losses.logit_kl(t, s, MASK, temperature=2.0, direction="forward")
    assert reverse.item() == pytest.approx(swapped.item(), rel=1e-5)
    with pytest.raises(ValueError, match="forward or reverse"):
        losses.logit_kl(s, t, MASK, direction="sideways")


def test_cross_entropy_shifts_and_ignores_minus_100() -> None:
    logits, _ = _states(shape=(2, 5, 11))
    labels = torch.tensor([[-100, 3, 4, -100, -100], [1, 2, 3, 4, 5]])
    shifted, targets = logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1)
    expected = F.cross_entropy(shifted, targets, ignore_index=-100)
    assert losses.cross_entropy(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("fn", [losses.hidden_mse, losses.hidden_cosine, losses.logit_kl])
def test_gradients_reach_only_the_student(fn) -> None:
    s, t = _states()
    s.requires_grad_(True)
    t.requires_grad_(True)
    fn(s, t, MASK).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    assert s.grad[~MASK].abs().sum() == 0  # padding gets no gradient either


@pytest.mark.parametrize("fn", [losses.hidden_mse, losses.hidden_cosine, losses.logit_kl])
def test_sums_split_across_ranks_with_the_global_count(fn) -> None:
    """Two 'ranks' each dividing by the token count of both add up to the loss of the whole batch."""
    s, t = _states()
    whole = fn(s, t, MASK)
    n = int(MASK.sum())
    parts = [fn(s[i : i + 1], t[i : i + 1], MASK[i : i + 1], num_tokens=n) for i in range(2)]
    assert (parts[0] + parts[1]).item() == pytest.approx(whole.item(), rel=1e-6)


def test_combine_weights_terms_and_reports_them() -> None:
    s, t = _states()
    student = losses.Side(hidden=[s], ce=torch.tensor(2.0))
    teacher = losses.Side(hidden=[t])
    batch = losses.Batch(mask=MASK)
    total, parts = losses.combine({"ce": 0.5, "hidden_mse": 0.5}, student, teacher, batch)
    mse = losses.hidden_mse(s, t, MASK).item()
    assert total.item() == pytest.approx(0.5 * 2.0 + 0.5 * mse, rel=1e-6)
    assert parts == pytest.approx({"ce": 2.0, "hidden_mse": mse})
    scaled, _ = losses.combine({"ce": 1.0, "hidden_mse": 1.0}, student, teacher, batch, {"hidden_mse": 3.0})
    assert scaled.item() == pytest.approx(2.0 + 3.0 * mse, rel=1e-6)


def test_extra_layer_pairs_are_averaged() -> None:
    (s1, t1), (s2, t2) = _states(1), _states(2)
    student, teacher = losses.Side(hidden=[s1, s2]), losses.Side(hidden=[t1, t2])
    value = losses.LOSSES.get("hidden_mse").fn(student, teacher, losses.Batch(mask=MASK))
    expected = (losses.hidden_mse(s1, t1, MASK) + losses.hidden_mse(s2, t2, MASK)) / 2
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_registry_names_the_known_terms() -> None:
    assert losses.LOSSES.names() == ["ce", "hidden_cosine", "hidden_mse", "logit_kl"]
    with pytest.raises(CompressorError, match="did you mean 'hidden_mse'"):
        losses.LOSSES.get("hiden_mse")
    assert not losses.LOSSES.get("ce").uses_teacher
    assert losses.LOSSES.get("logit_kl").uses_logits and not losses.LOSSES.get("hidden_mse").uses_logits
