"""bf16 mixed precision on a CPU (``trainer.precision=bf16-mixed``): the training
stages and the evaluation after them, on the tiny backbone.

Evaluation runs outside the Trainer, so it opens the autocast itself
(:func:`recpo.models.precision.autocast_for`); its figures must agree with float32
within bf16's rounding: top-1 agreement of the ranking and a bounded log-prob
difference, never bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recpo.models.precision import autocast_dtype, autocast_for, cpu_bf16_features
from tests.conftest import compose

CAPS = [
    "+experiment=demo",
    "data.source.synthetic.num_users=40",
    "sft.max_train_examples=16",
    "po.max_train_examples=8",
    "po.batch_size=4",
    "sft.max_epochs=1",
    "po.max_epochs=1",
    "eval.max_examples=8",
    "eval.max_new_tokens=3",
    "optimized_metric=null",
]
# Mean over the scored answers of |log p fp32 - log p bf16| per answer token, and the
# share of rows whose top-ranked candidate is the same in both precisions.
MAX_MEAN_TOKEN_DIFF = 0.05
MIN_TOP1_AGREEMENT = 0.9


def test_autocast_follows_the_trainer_precision():
    assert autocast_dtype("bf16-mixed") == torch.bfloat16
    assert autocast_dtype("32-true") is None and autocast_dtype("bf16-true") is None
    for precision, expected in (("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)):
        with autocast_for(precision, "cpu"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == expected
    with autocast_for("16-mixed", "cpu"):  # float16 autocast is a GPU setting
        assert not torch.is_autocast_enabled("cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    flags = cpu_bf16_features(info)
    assert flags["avx512_bf16"] and flags["avx2"] and not flags["amx_bf16"]
    assert not any(cpu_bf16_features(tmp_path / "missing").values())


def test_bf16_mixed_run_trains_and_evaluates_under_autocast(tmp_path, monkeypatch):
    from recpo.evaluation import evaluate
    from recpo.train import train

    seen: list[bool] = []
    split = evaluate.evaluate_split

    def spy(model, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return split(model, *args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_split", spy)
    cfg = compose([*CAPS, "trainer.precision=bf16-mixed"], tmp_path)
    train(cfg)
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    for stage in ("sft", "po"):
        for key in ("test/hr@1", "test/valid_ratio"):
            assert 0.0 <= results[f"{stage}:{key}"] <= 1.0
    assert seen and all(seen)  # SFT and PO evaluations, under bf16 autocast


def test_bf16_evaluation_agrees_with_float32(tmp_path):
    """Scores of an SFT-trained tiny backbone (a few AdamW steps, so the weights are no
    longer the initial ones) in both precisions."""
    from recpo.models.scoring import score_answers
    from recpo.pipeline import build_datamodule, load_base
    from recpo.training.sft import SFTModule

    torch.manual_seed(0)
    cfg = compose([*CAPS, "eval.max_examples=32"], tmp_path)
    dm = build_datamodule(cfg, "sft")
    model = load_base(cfg, dm).model
    module = SFTModule(model, optimizer=lambda p: torch.optim.AdamW(p))
    module.log = lambda *a, **k: None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for batch in dm.train_dataloader():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    diffs, same, rows = [], 0, 0
    with torch.no_grad():
        for batch in dm.eval_dataloader("test"):
            inputs = [batch[k] for k in ("prompt_ids", "prompt_mask", "answer_ids", "answer_mask")]
            fp32 = score_answers(model, *inputs)
            with autocast_for("bf16-mixed", "cpu"):
                bf16 = score_answers(model, *inputs)
            real = fp32.num_tokens > 0
            diffs.append(((fp32.logps - bf16.logps).abs() / fp32.num_tokens.clamp(min=1))[real])
            same += int((fp32.logps.argmax(1) == bf16.logps.argmax(1)).sum())
            rows += len(real)
    assert rows == 32
    assert torch.cat(diffs).mean() < MAX_MEAN_TOKEN_DIFF
    assert same / rows >= MIN_TOP1_AGREEMENT


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_trainer_configs_accept_the_precision(tmp_path, precision):
    cfg = compose([*CAPS, f"trainer.precision={precision}"], tmp_path)
    assert cfg.trainer.precision == precision
