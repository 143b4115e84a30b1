"""DynamicPO on DMPO / S-DPO / MPPO, the Top-K and β-DPO baselines, and the diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from recpo.objectives import (
    BetaDPOState,
    PreferenceLogps,
    beta_dpo,
    dmpo,
    dpo,
    dynamicpo,
    dynamicpo_mppo,
    dynamicpo_sdpo,
    mppo,
    sdpo,
    select_boundary_negatives,
    topk,
)
from recpo.objectives.diagnostics import boundary_metrics, reward_metrics

PLUGINS = [(dynamicpo, dmpo), (dynamicpo_sdpo, sdpo), (dynamicpo_mppo, mppo)]


def random_logps(
    batch: int = 6, k: int = 15, seed: int = 0, masked: bool = True
) -> PreferenceLogps:
    g = torch.Generator().manual_seed(seed)
    mask = None
    if masked:
        mask = torch.rand(batch, k, generator=g) > 0.25
        mask[0] = True
    chosen = -15 + 3 * torch.randn(batch, generator=g, dtype=torch.float64)
    return PreferenceLogps(
        policy_chosen=chosen,
        policy_rejected=-20 + 4 * torch.randn(batch, k, generator=g, dtype=torch.float64),
        ref_chosen=chosen + torch.randn(batch, generator=g, dtype=torch.float64),
        ref_rejected=-20 + 4 * torch.randn(batch, k, generator=g, dtype=torch.float64),
        chosen_tokens=torch.randint(2, 9, (batch,), generator=g),
        rejected_tokens=torch.randint(2, 9, (batch, k), generator=g),
        mask=mask,
    )


def test_dynamicpo_stage_one_hand_computed() -> None:
    """β0 = 1, α = 0.5, γ = 6, reference-free; L_w = −5, L = [−4, −10, −12].

    Stage I selects j = 0; β_0 = 1 + 0.5·tanh(−1.75) = 0.529312;
    loss = −log σ(0.529312·(−5 + 4)) = log(1 + e^{0.529312}) = 0.992423.
    """
    logps = PreferenceLogps(torch.tensor([-5.0]), torch.tensor([[-4.0, -10.0, -12.0]]))
    out = dynamicpo(logps, reference_free=True)
    assert out.losses.item() == pytest.approx(0.992423, abs=1e-6)
    assert out.metrics["select/count"].item() == 1
    assert out.metrics["select/stage1_share"].item() == 1
    assert out.metrics["beta/mean"].item() == pytest.approx(0.529312, abs=1e-6)
    assert out.metrics["delta/p_mean"].item() == -1 and out.metrics["delta/n_mean"].item() == 7


def test_dynamicpo_stage_two_hand_computed() -> None:
    """Reference-free, L_w = 0, L = [−1, −1.5, −10, −11, −20]: no violation.

    k-means: {−1, −1.5}, {−10, −11}, {−20}; B = {−1, −1.5}, D mean = −41/3 = −13.6667.
    j = 0: δp = 1, δn = 12.6667, ratio = (1 − 12.6667 − 6)/13.6667 = −1.292683, β = 0.570086.
    j = 1: δp = 1.5, δn = 12.1667, ratio = (1.5 − 12.1667 − 6)/13.6667 = −1.219512, β = 0.580245.
    z = (0.570086·1 + 0.580245·1.5)/2 = 0.720227, loss = log(1 + e^{−0.720227}) = 0.396520.
    Gradients (β constant): dℓ/dL_w = −σ(−z)(β_0 + β_1)/2 = −0.188276,
    dℓ/dL_j = σ(−z) β_j / 2 = [0.093307, 0.094970], 0 for the three unselected.
    """
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([[-1.0, -1.5, -10.0, -11.0, -20.0]], requires_grad=True)
    out = dynamicpo(PreferenceLogps(chosen, rejected), reference_free=True)
    assert out.losses.item() == pytest.approx(0.396520, abs=1e-6)
    assert out.metrics["select/stage2_share"].item() == 1
    out.losses.sum().backward()
    # Matching the constant-β gradient shows no gradient flows through β_j.
    assert chosen.grad.item() == pytest.approx(-0.188276, abs=1e-6)
    expected = torch.tensor([[0.093307, 0.094970, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(rejected.grad, expected, atol=1e-6, rtol=0)
    assert torch.all(rejected.grad[0, 2:] == 0)


@pytest.mark.parametrize(("plugin", "plain"), PLUGINS)
@pytest.mark.parametrize("masked", [False, True])
def test_everything_switched_off_equals_the_plain_objective(plugin, plain, masked: bool) -> None:
    logps = random_logps(masked=masked)
    off = plugin(logps, stage1=False, stage2=False, dynamic_beta=False)
    torch.testing.assert_close(off.losses, plain(logps).losses)
    torch.testing.assert_close(off.rejected_rewards, plain(logps).rejected_rewards)


@pytest.mark.parametrize(("plugin", "plain"), PLUGINS)
def test_without_dynamic_beta_is_the_plain_objective_on_the_selection(plugin, plain) -> None:
    logps = random_logps()
    selection = select_boundary_negatives(logps.policy_rejected, logps.policy_chosen, logps.mask)
    restricted = PreferenceLogps(**{**logps.__dict__, "mask": selection.selected})
    torch.testing.assert_close(plugin(logps, dynamic_beta=False).losses, plain(restricted).losses)


@pytest.mark.parametrize(("plugin", "plain"), PLUGINS)
def test_all_ones_mask_equals_no_mask(plugin, plain) -> None:
    logps = random_logps(masked=False)
    ones = PreferenceLogps(**{**logps.__dict__, "mask": torch.ones(6, 15, dtype=torch.bool)})
    a, b = plugin(logps), plugin(ones)
    torch.testing.assert_close(a.losses, b.losses)
    for key in a.metrics:
        torch.testing.assert_close(a.metrics[key], b.metrics[key])


@pytest.mark.parametrize(("plugin", "plain"), PLUGINS)
@pytest.mark.parametrize("solver", ["exact", "lloyd"])
def test_unselected_negatives_get_exactly_zero_gradient(plugin, plain, solver: str) -> None:
    logps = random_logps()
    logps.policy_rejected.requires_grad_(True)
    out = plugin(logps, solver=solver)
    out.losses.sum().backward()
    selection = select_boundary_negatives(
        logps.policy_rejected, logps.policy_chosen, logps.mask, solver=solver
    )
    grad = logps.policy_rejected.grad
    assert torch.all(grad[~selection.selected] == 0)
    assert torch.all(grad[selection.selected] != 0)


def test_sdpo_and_mppo_plugins_hand_computed() -> None:
    """Stage I example (L_w = −5, L = [−4, −10, −12], β_0 = 0.529312), reference-free.

    S-DPO: one selected negative, loss = −log σ(−0.529312·(−4 + 5)) = 0.992423, as DMPO.
    MPPO, tokens 1 each: p_w = e^{−5}, p_0 = e^{−4};
    loss = −log σ(0.529312·(e^{−5} − e^{−4})) = log(1 + e^{0.006128}) = 0.696216.
    """
    logps = PreferenceLogps(
        torch.tensor([-5.0]),
        torch.tensor([[-4.0, -10.0, -12.0]]),
        chosen_tokens=torch.tensor([1]),
        rejected_tokens=torch.ones(1, 3, dtype=torch.long),
    )
    assert dynamicpo_sdpo(logps, reference_free=True).losses.item() == pytest.approx(
        0.992423, abs=1e-6
    )
    logit = 0.529312 * (math.exp(-5) - math.exp(-4))
    expected = math.log1p(math.exp(-logit))
    assert dynamicpo_mppo(logps).losses.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.696216, abs=1e-6)


def test_reference_is_used_in_the_loss_not_in_the_selection() -> None:
    logps = random_logps(masked=False)
    shifted = PreferenceLogps(**{**logps.__dict__, "ref_rejected": logps.ref_rejected + 3.0})
    a, b = dynamicpo(logps), dynamicpo(shifted)
    assert torch.equal(a.metrics["select/count"], b.metrics["select/count"])
    assert not torch.allclose(a.losses, b.losses)


def test_topk_baseline() -> None:
    """k = 1 is DPO against the most likely negative; k >= K is DMPO."""
    logps = random_logps(masked=False)
    best = logps.policy_rejected.argmax(dim=-1, keepdim=True)
    single = PreferenceLogps(
        logps.policy_chosen,
        logps.policy_rejected.gather(1, best),
        logps.ref_chosen,
        logps.ref_rejected.gather(1, best),
    )
    torch.testing.assert_close(topk(logps, k=1).losses, dpo(single).losses)
    torch.testing.assert_close(topk(logps, k=15).losses, dmpo(logps).losses)
    assert topk(logps, k=3).metrics["select/count"].item() == 3
    assert "select/stage1_share" not in topk(logps, k=3).metrics
    dynamic = topk(logps, k=3, dynamic_beta=True).metrics["beta/std"]
    assert dynamic.item() > 0


def test_beta_dpo_baseline() -> None:
    """Stages off, a = 0: β = β0, plain DMPO. Hand case: reference-free L_w = 0,
    L = [−1, −3], stages off, no state: M = 0 − (−1 − 3)/2 = 2, β = 1 + 0.6·2 = 2.2,
    loss = −log σ(2.2·2) = log(1 + e^{−4.4}) = 0.012203."""
    logps = random_logps()
    torch.testing.assert_close(
        beta_dpo(logps, a=0.0, stage1=False, stage2=False).losses, dmpo(logps).losses
    )
    hand = PreferenceLogps(torch.tensor([0.0]), torch.tensor([[-1.0, -3.0]]))
    out = beta_dpo(hand, stage1=False, stage2=False, reference_free=True)
    assert out.losses.item() == pytest.approx(0.012203, abs=1e-6)
    assert out.metrics["beta/mean"].item() == pytest.approx(2.2)
    state = BetaDPOState()
    beta_dpo(logps, state=state)
    assert state.mean is not None
    filtered = beta_dpo(logps, filter_ratio=0.5)
    assert (filtered.losses == 0).sum() >= 3


def test_diagnostics_hand_computed() -> None:
    """Rewards: chosen [1, 0], negatives [[0, 2], [−1, −2]]. Row 0 loses to 2, row 1 beats
    both: win rate 1/2; pairs won 3/4. Policy L_w = [−5, −1], L = [[−4, −6], [−2, −1]]:
    L_w − L_k = [[−1, 1], [1, 0]], boundary-critical (≤ 0) 2 of 4."""
    valid = torch.ones(2, 2, dtype=torch.bool)
    rewards = reward_metrics(
        torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 2.0], [-1.0, -2.0]]), valid
    )
    assert rewards["rewards/win_rate"].item() == 0.5
    assert rewards["rewards/pairwise_accuracy"].item() == 0.75
    boundary = boundary_metrics(
        torch.tensor([-5.0, -1.0]), torch.tensor([[-4.0, -6.0], [-2.0, -1.0]]), valid
    )
    assert boundary["boundary/critical_share"].item() == 0.5
    # Masking the loss to row 0 makes row 0 a win.
    masked = reward_metrics(
        torch.tensor([1.0, 0.0]),
        torch.tensor([[0.0, 2.0], [-1.0, -2.0]]),
        torch.tensor([[1, 0], [1, 1]]).bool(),
    )
    assert masked["rewards/win_rate"].item() == 1.0


@pytest.mark.parametrize("objective", [dynamicpo, dynamicpo_sdpo, dynamicpo_mppo, topk, beta_dpo])
def test_plugin_outputs_are_well_formed(objective) -> None:
    logps = random_logps()
    logps.policy_chosen.requires_grad_(True)
    out = objective(logps)
    assert out.losses.shape == (6,) and out.losses.requires_grad
    assert out.rejected_rewards.shape == (6, 15) and not out.rejected_rewards.requires_grad
    for key in (
        "rewards/win_rate",
        "select/count",
        "beta/mean",
        "beta/std",
        "boundary/critical_share",
    ):
        assert key in out.metrics
    for name, value in out.metrics.items():
        assert value.dim() == 0 and not value.requires_grad and torch.isfinite(value), name
