"""The preference stage: reference modes agree, gradients reach only the policy."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from recpo.objectives.losses import dmpo
from recpo.objectives.plugin import dynamicpo
from recpo.training.preference import PreferenceModule, precompute_reference


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    return LlamaForCausalLM(config)


def make_batch(b: int = 3, k: int = 4, seed: int = 0) -> dict:
    """Prompts (left-padded) with 1 + K one-or-two-token answers; answer_positions index
    a 6-candidate table so the precomputed path can be checked."""
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(3, 60, (b, 7), generator=g)
    prompt_mask = torch.ones(b, 7, dtype=torch.long)
    prompt_mask[0, :2] = 0
    answer_ids = torch.randint(3, 60, (b, 6, 2), generator=g)
    answer_ids[:, :, 1] = 2
    positions = torch.stack([torch.randperm(6, generator=g)[: 1 + k] for _ in range(b)])
    chosen = answer_ids.gather(1, positions[:, :, None].expand(-1, -1, 2))
    return {
        "all_answer_ids": answer_ids,
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "answer_ids": chosen,
        "answer_mask": torch.ones_like(chosen),
        "answer_positions": positions,
        "example_index": torch.arange(b),
        "target_index": torch.zeros(b, dtype=torch.long),
    }


def module(reference: str, objective=dmpo, model=None) -> PreferenceModule:
    m = PreferenceModule(
        model or tiny_model(),
        objective=objective,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        reference=reference,
    )
    m.log = m.log_dict = lambda *a, **k: None
    return m


def test_copy_reference_starts_equal_to_policy():
    """At initialisation the policy equals the reference: every log-ratio is 0 and the
    DMPO loss is -log sigmoid(0) = log 2."""
    m = module("copy")
    logps = m.preference_logps(make_batch())
    assert torch.allclose(logps.policy_chosen, logps.ref_chosen)
    out = m.objective(logps)
    assert torch.allclose(
        out.losses, torch.full((3,), torch.log(torch.tensor(2.0)).item()), atol=1e-6
    )


def all_candidates(batch: dict) -> dict:
    """``batch`` with every candidate as an answer: a batch of ``candidates_dataloader``."""
    ids = batch["all_answer_ids"]
    return {**batch, "answer_ids": ids, "answer_mask": torch.ones_like(ids)}


def test_precomputed_reference_equals_live_reference():
    batch = make_batch()
    live = module("copy")
    pre = module("precompute", model=live.model)
    loader = [all_candidates(batch)]
    table = precompute_reference(pre, live.ref_model, loader, num_examples=3, num_candidates=6)
    pre.set_reference_table(table)
    a = live.preference_logps(batch)
    b = pre.preference_logps(batch)
    assert torch.allclose(a.ref_chosen, b.ref_chosen, atol=1e-5)
    assert torch.allclose(a.ref_rejected, b.ref_rejected, atol=1e-5)


def test_reference_table_is_computed_when_fit_starts():
    """``setup("fit")`` computes the table from the initial policy over the
    datamodule's training rows (Lightning calls it before restoring a checkpoint);
    it is computed once and equals the live reference."""
    batch = make_batch()
    live = module("copy")
    pre = module("precompute", model=live.model)
    loader = [all_candidates(batch)]

    class Data:
        num_candidates = 6

        def candidates_dataloader(self):
            return loader

        def examples(self, split):
            assert split == "train"
            return [None] * 3

    class Strategy:
        root_device = torch.device("cpu")

    class Trainer:
        datamodule = Data()
        strategy = Strategy()

    pre.trainer = Trainer()
    pre.setup("validate")
    assert pre.ref_table.numel() == 0
    pre.setup("fit")
    table = pre.ref_table.clone()
    assert table.shape == (3, 6)
    a, b = live.preference_logps(batch), pre.preference_logps(batch)
    assert torch.allclose(a.ref_rejected, b.ref_rejected, atol=1e-5)
    with torch.no_grad():  # a later setup (a resumed fit) keeps the table
        next(pre.model.parameters()).add_(1.0)
    pre.setup("fit")
    assert torch.equal(pre.ref_table, table)


def test_gradients_reach_policy_only_and_reference_stays_frozen():
    m = module("copy", objective=lambda lp: dynamicpo(lp, gamma=2.0))
    # Move the policy away from the reference so the loss has a gradient.
    with torch.no_grad():
        for p in m.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    before = [p.clone() for p in m.ref_model.parameters()]
    loss = m.training_step(make_batch(), 0)
    loss.backward()
    assert all(p.grad is None for p in m.ref_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, m.ref_model.parameters()))
    # Checkpoints hold the trained policy, not the frozen copy.
    checkpoint = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(checkpoint)
    assert set(checkpoint["state_dict"]) == {f"model.{k}" for k in m.model.state_dict()}


def test_lora_reference_is_adapter_disabled():
    from peft import LoraConfig, get_peft_model

    base = tiny_model()
    batch = make_batch()
    plain = module("copy", model=tiny_model()).score(base, batch).logps
    peft = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    m = module("disable_adapter", model=peft)
    ref = m.reference_logps(batch)
    assert torch.allclose(ref, plain, atol=1e-5)
    assert not torch.allclose(m.score(m.model, batch).logps, plain, atol=1e-3)


def test_reference_free_needs_no_reference():
    m = module("none", objective=lambda lp: dmpo(lp, reference_free=True))
    logps = m.preference_logps(make_batch())
    assert logps.ref_chosen is None and torch.isfinite(m.objective(logps).losses).all()


def test_bad_reference_mode():
    with pytest.raises(ValueError, match="po.reference"):
        module("frozen")
    with pytest.raises(ValueError, match="LoRA"):
        module("disable_adapter")
