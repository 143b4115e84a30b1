"""DPO, DMPO, S-DPO and MPPO: hand-computed values, identities and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from recpo.objectives import (
    ObjectiveOutput,
    PreferenceLogps,
    dmpo,
    dmpo_losses,
    dpo,
    mppo,
    mppo_losses,
    sdpo,
    sdpo_losses,
)


def neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


def random_logps(
    batch: int = 5, k: int = 4, seed: int = 0, masked: bool = False
) -> PreferenceLogps:
    g = torch.Generator().manual_seed(seed)
    mask = None
    if masked:
        mask = torch.rand(batch, k, generator=g) > 0.3
        mask[:, 0] = True
    return PreferenceLogps(
        policy_chosen=-10 + 3 * torch.randn(batch, generator=g, dtype=torch.float64),
        policy_rejected=-12 + 3 * torch.randn(batch, k, generator=g, dtype=torch.float64),
        ref_chosen=-10 + 3 * torch.randn(batch, generator=g, dtype=torch.float64),
        ref_rejected=-12 + 3 * torch.randn(batch, k, generator=g, dtype=torch.float64),
        chosen_tokens=torch.randint(1, 8, (batch,), generator=g),
        rejected_tokens=torch.randint(1, 8, (batch, k), generator=g),
        mask=mask,
    )


def test_dpo_hand_computed() -> None:
    """β = 1, L_w = −2, L_ref,w = −3, L_1 = −4, L_ref,1 = −3.

    r_w = −2 − (−3) = 1, r_1 = −4 − (−3) = −1, loss = −log σ(1·(1 − (−1)))
    = log(1 + e^{−2}) = 0.126928. Rewards are β·r: 1 and −1.
    """
    logps = PreferenceLogps(
        torch.tensor([-2.0]), torch.tensor([[-4.0]]), torch.tensor([-3.0]), torch.tensor([[-3.0]])
    )
    out = dpo(logps, beta=1.0)
    assert isinstance(out, ObjectiveOutput)
    assert out.losses.item() == pytest.approx(0.126928, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(1.0)
    assert out.rejected_rewards.item() == pytest.approx(-1.0)
    # β = 0.5 halves the logit: log(1 + e^{−1}) = 0.313262.
    assert dpo(logps, beta=0.5).losses.item() == pytest.approx(0.313262, abs=1e-6)


def test_dmpo_hand_computed() -> None:
    """β = 1, reference-free, L_w = −1, L = [−2, −4].

    logit = −1 − (−2 + −4)/2 = 2, loss = log(1 + e^{−2}) = 0.126928.
    With β = 2: logit 4, loss = log(1 + e^{−4}) = 0.018150.
    """
    logps = PreferenceLogps(torch.tensor([-1.0]), torch.tensor([[-2.0, -4.0]]))
    assert dmpo(logps, reference_free=True).losses.item() == pytest.approx(0.126928, abs=1e-6)
    assert dmpo(logps, beta=2.0, reference_free=True).losses.item() == pytest.approx(
        0.018150, abs=1e-6
    )


def test_sdpo_hand_computed() -> None:
    """β = 1, reference-free, L_w = 0, L = [−1, −1].

    Σ_k exp(r_k − r_w) = 2e^{−1} = 0.735759, −log of it = 0.306853,
    loss = −log σ(0.306853) = log(1 + 0.735759) = 0.551445.
    """
    logps = PreferenceLogps(torch.tensor([0.0]), torch.tensor([[-1.0, -1.0]]))
    assert sdpo(logps, reference_free=True).losses.item() == pytest.approx(0.551445, abs=1e-6)


def test_mppo_hand_computed() -> None:
    """L_w = −1 over 2 tokens, L = [−2, −6] over [2, 3] tokens.

    p_w = e^{−0.5} = 0.606531, p = [e^{−1}, e^{−2}] = [0.367879, 0.135335];
    logit = 2·0.606531 − 0.503215 = 0.709847, loss = log(1 + e^{−0.709847}) = 0.399930.
    Rewards are the probabilities.
    """
    logps = PreferenceLogps(
        torch.tensor([-1.0]),
        torch.tensor([[-2.0, -6.0]]),
        chosen_tokens=torch.tensor([2]),
        rejected_tokens=torch.tensor([[2, 3]]),
    )
    out = mppo(logps)
    assert out.losses.item() == pytest.approx(0.399930, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(math.exp(-0.5), abs=1e-6)
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([[math.exp(-1), math.exp(-2)]]))


def test_zero_margins_give_log_two() -> None:
    """Chosen and negatives equally likely: every logit is 0, loss = log 2 (S-DPO: log(1 + K))."""
    logps = PreferenceLogps(
        torch.zeros(3),
        torch.zeros(3, 1),
        torch.zeros(3),
        torch.zeros(3, 1),
        torch.ones(3),
        torch.ones(3, 1),
    )
    for objective in (dpo, dmpo, sdpo, mppo):
        torch.testing.assert_close(objective(logps).losses, torch.full((3,), math.log(2.0)))
    wide = PreferenceLogps(torch.zeros(2), torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3))
    # S-DPO: −log σ(−log 3) = log(1 + 3).
    torch.testing.assert_close(sdpo(wide).losses, torch.full((2,), math.log(4.0)))


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0])
def test_single_negative_dmpo_and_sdpo_equal_dpo(beta: float) -> None:
    logps = random_logps(k=1)
    expected = dpo(logps, beta=beta).losses
    torch.testing.assert_close(dmpo(logps, beta=beta).losses, expected)
    torch.testing.assert_close(sdpo(logps, beta=beta).losses, expected)


def test_dpo_rejects_several_negatives() -> None:
    with pytest.raises(ValueError, match="K=1"):
        dpo(random_logps(k=3))


@pytest.mark.parametrize("objective", [dmpo, sdpo, mppo])
def test_all_ones_mask_equals_no_mask(objective) -> None:
    plain = random_logps()
    masked = PreferenceLogps(**{**plain.__dict__, "mask": torch.ones(5, 4, dtype=torch.bool)})
    a, b = objective(plain), objective(masked)
    torch.testing.assert_close(a.losses, b.losses)
    torch.testing.assert_close(a.rejected_rewards, b.rejected_rewards)
    assert a.metrics.keys() == b.metrics.keys()
    for key in a.metrics:
        torch.testing.assert_close(a.metrics[key], b.metrics[key])


@pytest.mark.parametrize("objective", [dmpo, sdpo, mppo])
def test_masked_negatives_are_ignored_even_if_garbage(objective) -> None:
    """A masked column may hold NaN/inf: the loss equals the loss without that column."""
    logps = random_logps(k=3)
    garbage = {
        "policy_rejected": torch.cat([logps.policy_rejected, torch.full((5, 1), math.nan)], 1),
        "ref_rejected": torch.cat([logps.ref_rejected, torch.full((5, 1), -math.inf)], 1),
        "rejected_tokens": torch.cat(
            [logps.rejected_tokens, torch.zeros(5, 1, dtype=torch.long)], 1
        ),
        "mask": torch.tensor([[True, True, True, False]]).expand(5, 4),
    }
    padded = PreferenceLogps(**{**logps.__dict__, **garbage})
    padded.policy_rejected.requires_grad_(True)
    out = objective(padded)
    torch.testing.assert_close(out.losses, objective(logps).losses)
    assert torch.all(out.rejected_rewards[:, 3] == 0)
    out.losses.sum().backward()
    grad = padded.policy_rejected.grad
    assert torch.isfinite(grad).all() and torch.all(grad[:, 3] == 0)


@pytest.mark.parametrize("objective", [dmpo, sdpo, mppo])
def test_example_without_valid_negatives_has_zero_loss_and_gradient(objective) -> None:
    logps = random_logps(batch=2, k=3)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    logps = PreferenceLogps(**{**logps.__dict__, "mask": mask})
    logps.policy_chosen.requires_grad_(True)
    out = objective(logps)
    assert out.losses[1] == 0
    out.losses.sum().backward()
    assert logps.policy_chosen.grad[1] == 0 and torch.isfinite(logps.policy_chosen.grad).all()


def test_sdpo_is_stable_for_large_margins() -> None:
    """exp(β (r_k − r_w)) overflows float32 for margins of ~100; logsumexp does not."""
    logps = PreferenceLogps(
        torch.tensor([0.0, -500.0]), torch.tensor([[-500.0, -400.0], [0.0, -1.0]]), mask=None
    )
    losses = sdpo(logps, reference_free=True).losses
    assert torch.isfinite(losses).all()
    assert losses[0].item() == pytest.approx(0.0, abs=1e-30)
    # r_k − r_w = 500 and 499: log Σ exp = 500 + log(1 + e^{−1}) = 500.313262 = the loss.
    assert losses[1].item() == pytest.approx(500.313262, abs=1e-3)


def test_reference_free_and_missing_reference() -> None:
    logps = random_logps()
    no_ref = PreferenceLogps(logps.policy_chosen, logps.policy_rejected)
    torch.testing.assert_close(
        dmpo(no_ref, reference_free=True).losses, dmpo(logps, reference_free=True).losses
    )
    with pytest.raises(ValueError, match="reference"):
        dmpo(no_ref)
    with pytest.raises(ValueError, match="token"):
        mppo(no_ref)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_valid_logps_raise(bad: float) -> None:
    logps = random_logps()
    logps.policy_rejected[2, 1] = bad
    with pytest.raises(ValueError, match="non-finite"):
        dmpo(logps)


def test_shape_validation() -> None:
    with pytest.raises(ValueError, match="shape"):
        PreferenceLogps(torch.zeros(2), torch.zeros(2, 3), mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        PreferenceLogps(torch.zeros(2), torch.zeros(2, 3), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="batch"):
        PreferenceLogps(torch.zeros(3), torch.zeros(2, 3))


@pytest.mark.parametrize("losses_fn", [dmpo_losses, sdpo_losses, mppo_losses])
def test_gradcheck_core_losses(losses_fn) -> None:
    """Analytic gradients of the masked, per-negative-β losses match finite differences."""
    g = torch.Generator().manual_seed(1)
    chosen = (0.1 * torch.randn(3, generator=g, dtype=torch.float64)).requires_grad_()
    rejected = (0.1 * torch.randn(3, 4, generator=g, dtype=torch.float64)).requires_grad_()
    beta = 0.5 + torch.rand(3, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda c, r: losses_fn(c, r, beta, mask), (chosen, rejected))


def test_dmpo_gradient_by_hand() -> None:
    """DMPO, β = 1, K = 2 valid of 3: z = r_w − (r_1 + r_2)/2, dℓ/dz = −σ(−z).

    With r_w = 0, r = [−1, −3, (masked)]: z = 2, σ(−2) = 0.119203, so
    dℓ/dr_w = −0.119203, dℓ/dr_k = 0.119203/2 = 0.059601 for k = 1, 2 and 0 for the masked one.
    """
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([[-1.0, -3.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    dmpo_losses(chosen, rejected, 1.0, mask).sum().backward()
    assert chosen.grad.item() == pytest.approx(-0.119203, abs=1e-6)
    torch.testing.assert_close(
        rejected.grad, torch.tensor([[0.059601, 0.059601, 0.0]]), atol=1e-6, rtol=0
    )


def test_metrics_are_detached_scalars() -> None:
    logps = random_logps(masked=True)
    logps.policy_chosen.requires_grad_(True)
    out = dmpo(logps)
    assert out.losses.requires_grad and not out.chosen_rewards.requires_grad
    for name, value in out.metrics.items():
        assert value.dim() == 0 and not value.requires_grad, name
    for key in ("rewards/win_rate", "rewards/pairwise_accuracy", "boundary/critical_share"):
        assert 0.0 <= out.metrics[key].item() <= 1.0
