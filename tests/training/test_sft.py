"""The SFT loss: mean NLL over the answer tokens (title + end token), prompt excluded."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from recpo.training.sft import SFTModule


def test_sft_loss_equals_masked_cross_entropy():
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
        )
    ).eval()
    module = SFTModule(model, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    module.log = lambda *a, **k: None
    # Two prompts (left-padded) and one answer each (right-padded).
    prompts = [[1, 7, 8, 9], [1, 5, 6]]
    answers = [[20, 21, 2], [30, 2]]
    prompt_ids = torch.tensor([[1, 7, 8, 9], [0, 1, 5, 6]])
    prompt_mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    answer_ids = torch.tensor([[[20, 21, 2]], [[30, 2, 0]]])
    answer_mask = torch.tensor([[[1, 1, 1]], [[1, 1, 0]]])
    batch = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "answer_ids": answer_ids,
        "answer_mask": answer_mask,
    }
    loss = module.training_step(batch, 0)
    # Reference: run each unpadded prompt+answer, cross-entropy on answer positions only.
    nll, count = 0.0, 0
    for p, a in zip(prompts, answers):
        ids = torch.tensor([p + a])
        logits = model(input_ids=ids).logits[0]
        pred = logits[len(p) - 1 : len(p) + len(a) - 1]
        nll += F.cross_entropy(pred, torch.tensor(a), reduction="sum")
        count += len(a)
    assert torch.allclose(loss, nll / count, atol=1e-5)
