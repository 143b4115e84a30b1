"""Dual-margin dynamic β (DynamicPO §3.3) and β-DPO's batch-level β."""

from __future__ import annotations

import math

import pytest
import torch

from recpo.objectives import BetaDPOState, beta_dpo_beta, dynamic_beta


def test_dynamic_beta_hand_computed() -> None:
    """β0 = 1, α = 0.5, γ = 6; L_w = −5, L = [−4, −10, −12], only j = 0 selected.

    D = {−10, −12}, mean −11; δp = −5 − (−4) = −1, δn = −4 − (−11) = 7;
    ratio = (−1 − 7 − 6) / (1 + 7) = −1.75; β_0 = 1 + 0.5·tanh(−1.75) = 0.529312.
    Unselected positions carry 0. With γ = 2 (official code): ratio = −10/8 = −1.25,
    β_0 = 1 − 0.5·0.848284 = 0.575858. With β0 = 2, α = 0.25: 2(1 − 0.25·0.941376) = 1.529312.
    """
    chosen = torch.tensor([-5.0])
    logps = torch.tensor([[-4.0, -10.0, -12.0]])
    selected = torch.tensor([[True, False, False]])
    out = dynamic_beta(chosen, logps, selected)
    torch.testing.assert_close(out.beta, torch.tensor([[0.529312, 0.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.delta_p, torch.tensor([[-1.0, 0.0, 0.0]]))
    torch.testing.assert_close(out.delta_n, torch.tensor([[7.0, 0.0, 0.0]]))
    official = dynamic_beta(chosen, logps, selected, gamma=2.0).beta[0, 0].item()
    assert official == pytest.approx(0.575858, abs=1e-6)
    scaled = dynamic_beta(chosen, logps, selected, beta0=2.0, alpha=0.25).beta[0, 0].item()
    assert scaled == pytest.approx(1.529312, abs=1e-6)


def test_dynamic_beta_when_everything_is_selected() -> None:
    """L_w = 0, L = [−1, −3], both selected: D := B, mean −2.

    j = 0: δp = 1, δn = 1, ratio = (1 − 1 − 6)/2 = −3, β = 1 + 0.5·tanh(−3) = 0.502473.
    j = 1: δp = 3, δn = −1, ratio = (3 + 1 − 6)/4 = −0.5, β = 1 + 0.5·tanh(−0.5) = 0.768941.
    """
    out = dynamic_beta(
        torch.tensor([0.0]), torch.tensor([[-1.0, -3.0]]), torch.tensor([[True, True]])
    )
    torch.testing.assert_close(out.beta, torch.tensor([[0.502473, 0.768941]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.delta_n, torch.tensor([[1.0, -1.0]]))


@pytest.mark.parametrize(("gamma", "expected"), [(6.0, 0.5), (2.0, 0.5), (0.0, 1.0), (-1.0, 1.5)])
def test_zero_denominator_takes_the_limit(gamma: float, expected: float) -> None:
    """L_w = L_j = mean(D) = −2: δp = δn = 0, the ratio −γ/0 → tanh = sign(−γ)."""
    out = dynamic_beta(
        torch.tensor([-2.0]),
        torch.tensor([[-2.0, -2.0]]),
        torch.tensor([[True, True]]),
        gamma=gamma,
    )
    torch.testing.assert_close(out.beta, torch.full((1, 2), expected))


def test_masked_negatives_do_not_enter_the_easy_mean() -> None:
    """Same as the hand example plus a masked NaN column: identical β."""
    chosen = torch.tensor([-5.0])
    logps = torch.tensor([[-4.0, -10.0, -12.0, math.nan]])
    selected = torch.tensor([[True, False, False, True]])
    mask = torch.tensor([[True, True, True, False]])
    out = dynamic_beta(chosen, logps, selected, mask)
    torch.testing.assert_close(
        out.beta, torch.tensor([[0.529312, 0.0, 0.0, 0.0]]), atol=1e-6, rtol=0
    )
    with pytest.raises(ValueError, match="non-finite"):
        dynamic_beta(chosen, logps, selected)


def test_dynamic_beta_is_bounded_and_detached() -> None:
    g = torch.Generator().manual_seed(0)
    logps = (torch.randn(64, 15, generator=g) * 5 - 20).requires_grad_()
    chosen = (torch.randn(64, generator=g) * 5 - 18).requires_grad_()
    selected = torch.rand(64, 15, generator=g) > 0.6
    out = dynamic_beta(chosen, logps, selected, beta0=1.5, alpha=0.4)
    assert not out.beta.requires_grad and not out.delta_p.requires_grad
    chosen_beta = out.beta[selected]
    assert (chosen_beta >= 1.5 * 0.6 - 1e-6).all() and (chosen_beta <= 1.5 * 1.4 + 1e-6).all()
    assert (out.beta[~selected] == 0).all()


def test_dynamic_beta_half_precision_inputs() -> None:
    out = dynamic_beta(
        torch.tensor([-5.0], dtype=torch.bfloat16),
        torch.tensor([[-4.0, -10.0, -12.0]], dtype=torch.bfloat16),
        torch.tensor([[True, False, False]]),
    )
    assert out.beta.dtype == torch.float32
    assert out.beta[0, 0].item() == pytest.approx(0.529312, abs=1e-5)


def test_beta_dpo_stateless_hand_computed() -> None:
    """β0 = 1, a = 0.6, margins [1, 3], no state: M_0 = 0, β = 1 + 0.6·2 = 2.2.

    A margin of −10 would give 1 − 6 = −5: clamped to 1e-3.
    """
    out = beta_dpo_beta(torch.tensor([1.0, 3.0]), beta0=1.0, a=0.6)
    assert out.beta.item() == pytest.approx(2.2)
    assert out.keep.all() and out.threshold.item() == 0
    assert beta_dpo_beta(torch.tensor([-10.0]), a=0.6).beta.item() == pytest.approx(1e-3)


def test_beta_dpo_running_threshold() -> None:
    """Momentum 0.9, state updated before use.

    Batch 1, margins [1, 3]: M_0 = 0.9·0 + 0.1·2 = 0.2, β = 1 + 0.6·(2 − 0.2) = 2.08.
    Batch 2, margins [0, 0]: M_0 = 0.9·0.2 + 0.1·0 = 0.18, β = 1 + 0.6·(0 − 0.18) = 0.892.
    A row without a margin (rows=False) is left out of both means.
    """
    state = BetaDPOState(momentum=0.9)
    first = beta_dpo_beta(
        torch.tensor([1.0, 3.0, 100.0]), torch.tensor([True, True, False]), state=state
    )
    assert first.beta.item() == pytest.approx(2.08)
    second = beta_dpo_beta(torch.tensor([0.0, 0.0]), state=state)
    assert second.beta.item() == pytest.approx(0.892)
    assert state.mean.item() == pytest.approx(0.18)
    restored = BetaDPOState()
    restored.load_state_dict(state.state_dict())
    assert restored.mean.item() == pytest.approx(0.18) and restored.momentum == 0.9


def test_beta_dpo_filtering_keeps_a_share_of_rows() -> None:
    margins = torch.tensor([0.0, 0.1, -0.1, 50.0, 0.05])
    rows = torch.tensor([True, True, True, True, False])
    g = torch.Generator().manual_seed(0)
    out = beta_dpo_beta(margins, rows, filter_ratio=0.2, generator=g)
    assert int(out.keep.sum()) <= 4 and not out.keep[4]
    again = beta_dpo_beta(
        margins, rows, filter_ratio=0.2, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out.keep, again.keep)


def test_dynamic_beta_matches_a_per_row_loop() -> None:
    """The batched β equals the formula evaluated negative by negative in Python floats."""
    g = torch.Generator().manual_seed(3)
    logps = torch.randn(40, 15, generator=g, dtype=torch.float64) * 5 - 20
    chosen = torch.randn(40, generator=g, dtype=torch.float64) * 5 - 18
    selected = torch.rand(40, 15, generator=g) > 0.7
    mask = torch.rand(40, 15, generator=g) > 0.1
    out = dynamic_beta(chosen, logps, selected, mask, beta0=1.2, alpha=0.3, gamma=4.0)
    for r in range(40):
        row = logps[r].tolist()
        chosen_set = [k for k in range(15) if selected[r, k] and mask[r, k]]
        rest = [k for k in range(15) if mask[r, k] and not selected[r, k]] or chosen_set
        easy = sum(row[k] for k in rest) / len(rest) if rest else 0.0
        for k in range(15):
            if k not in chosen_set:
                assert out.beta[r, k] == 0
                continue
            dp, dn = chosen[r].item() - row[k], row[k] - easy
            expected = 1.2 * (1 + 0.3 * math.tanh((dp - dn - 4.0) / (abs(dp) + abs(dn))))
            assert out.beta[r, k].item() == pytest.approx(expected, rel=1e-12)
