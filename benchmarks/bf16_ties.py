"""Why bf16 scores of SmolLM2 part from float32 after one small optimizer step.

SmolLM2's weights come from a GGUF file with 4-bit blocks (Q4_1): each weight is
``d * q + m`` with ``d`` and ``m`` float16 and ``q`` in 0..15, so its float32 value has
few significant bits. A share of them lies exactly half-way between two bfloat16
values. bf16 autocast rounds such a tie to the even neighbour; after any step, however
small, the weight sits a hair above or below the tie and rounds to the neighbour on
that side. AdamW's first step moves every weight by about ``lr`` in the direction of
``-sign(grad)``, so every tied weight jumps half a bf16 unit (about 1e-4) in the same
descent direction at once: a large coordinated step that float32 does not see.
Random perturbations of the same size tip the ties both ways and mostly cancel.

This script prints, for the pretrained weights on real LastFM test rows (shared scoring):

* the share of linear weights at a bf16 tie, and exactly representable in bf16;
* the mean |log p(fp32) - log p(bf16)| per answer before and after one AdamW step
  (``--lr``, SFT batch of ``--batch-size`` rows);
* the same after moving the weights off the grid first (Gaussian noise ``--noise``).

    python benchmarks/bf16_ties.py --rows 4 --lr 1e-7 --noise 1e-5

Measured on this project's CPU (AMD EPYC, AVX-512 BF16, 1 thread), 4 test rows
(80 answers), lr 1e-7: ties 9.6% of the decoder layers' linear weights (exact in bf16: 25.4%); disagreement 0.100
before, 4.82 after the step; with noise 1e-5 first: ties 0.003%, 0.098 before, 0.096 after.
A model fine-tuned for more than a few steps is off the grid, so bf16 agreement
should be checked on it, not on the pretrained weights after one step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def tie_shares(model: torch.nn.Module) -> tuple[float, float]:
    """Shares of the decoder layers' linear weights that sit at a bf16 tie, and that
    bf16 holds exactly (the 16 low bits of the float32 pattern: 0x8000, 0)."""
    ties = exact = total = 0
    for name, p in model.named_parameters():
        if "layers" in name and p.dim() == 2:
            low = p.detach().contiguous().view(torch.int32) & 0xFFFF
            ties += int((low == 0x8000).sum())
            exact += int((low == 0).sum())
            total += low.numel()
    return ties / total, exact / total


def disagreement(model: torch.nn.Module, inputs: tuple) -> float:
    """Mean |log p(fp32) - log p(bf16)| per real answer."""
    from recpo.models.scoring import score_answers

    model.eval()
    with torch.no_grad():
        fp32 = score_answers(model, *inputs, method="shared").logps
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = score_answers(model, *inputs, method="shared").logps
    real = inputs[3].sum(-1) > 0
    return float((fp32 - bf16).abs()[real].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--rows", type=int, default=4, help="test rows scored")
    parser.add_argument("--batch-size", type=int, default=4, help="SFT rows of the step")
    parser.add_argument("--lr", type=float, default=1e-7)
    parser.add_argument("--noise", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from bench_bf16_cpu import OUTPUT_DIR

    from recpo.config import compose
    from recpo.pipeline import build_datamodule, load_base
    from recpo.training.sft import SFTModule

    cfg = compose(
        [
            "+experiment=lastfm_sft",
            "backbone=smollm2_135m",
            f"paths.data_dir={args.data_dir}",
            f"sft.batch_size={args.batch_size}",
            f"eval.max_examples={args.rows}",
            f"runtime.eval_batch_size={args.rows}",
        ],
        output_dir=OUTPUT_DIR,
    )
    dm = build_datamodule(cfg, "sft")
    step_batch = None
    for off_grid in (False, True):
        model = load_base(cfg, dm).model
        batch = next(iter(dm.eval_dataloader("test")))
        inputs = tuple(batch[k] for k in ("prompt_ids", "prompt_mask", "answer_ids", "answer_mask"))
        step_batch = step_batch or next(iter(dm.train_dataloader()))
        label = "pretrained weights"
        if off_grid:
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "layers" in name:
                        p.add_(torch.randn(p.shape, generator=generator) * args.noise)
            label = f"after Gaussian noise {args.noise:g}"
        ties, exact = tie_shares(model)
        before = disagreement(model, inputs)
        module = SFTModule(model, optimizer=lambda p: torch.optim.AdamW(p))
        module.log = module.log_dict = lambda *a, **k: None
        module.train()
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=args.lr
        )
        module.training_step(step_batch, 0).backward()
        optimizer.step()
        after = disagreement(model, inputs)
        print(
            f"{label}: bf16 ties {ties:.4%}, exact in bf16 {exact:.4%}; "
            f"mean |dlog p| per answer {before:.3f} before, {after:.3f} after one AdamW "
            f"step (lr {args.lr:g})",
            flush=True,
        )


if __name__ == "__main__":
    main()
