"""Run both evaluation protocols over a split and summarise them.

* ``ranking``: score all candidates by sequence log-prob (one shared forward per
  prompt) -> ``hr@1``, ``hr@5``, ``ndcg@5``.
* ``generation`` (the paper's): greedy decoding of at most ``max_new_tokens``;
  ``gen_hr@1`` = hits / rows and ``valid_ratio`` = valid / rows under the chosen
  matcher, plus the same under the other matcher and the number of rows whose
  candidates contain nested titles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from recpo.evaluation.metrics import has_nested_titles, judge_generation, ranking_metrics
from recpo.models.scoring import score_answers

MATCHERS = ("substring", "strict")


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate_split(
    model: Any,
    tokenizer: Any,
    loader: Any,
    split: str,
    protocols: tuple[str, ...] = ("ranking", "generation"),
    max_new_tokens: int = 20,
    matcher: str = "substring",
    scoring: str = "shared",
    out_dir: Path | None = None,
) -> dict[str, float]:
    """Evaluate one split; write ``{split}_predictions.jsonl`` to ``out_dir`` when given.

    Returns:
        Metrics keyed ``{split}/<name>``.
    """
    if matcher not in MATCHERS:
        raise ValueError(f"eval.matcher must be one of {MATCHERS}, got {matcher!r}")
    was_training = model.training
    model.eval()
    device = _device_of(model)
    sums: dict[str, float] = {}
    rows: list[dict] = []
    n = 0
    try:
        for batch in tqdm(loader, desc=f"eval {split}", leave=False):
            prompt_ids = batch["prompt_ids"].to(device)
            prompt_mask = batch["prompt_mask"].to(device)
            b = prompt_ids.shape[0]
            records = [{"row": r, "target": t} for r, t in zip(batch["rows"], batch["targets"])]
            if "ranking" in protocols:
                scores = score_answers(
                    model,
                    prompt_ids,
                    prompt_mask,
                    batch["answer_ids"].to(device),
                    batch["answer_mask"].to(device),
                    method=scoring,
                ).logps
                per_row = ranking_metrics(scores.float(), batch["target_index"].to(device))
                for key, value in per_row.items():
                    sums[key] = sums.get(key, 0.0) + float(value.sum())
                best = scores.argmax(dim=1).tolist()
                for rec, cands, j in zip(records, batch["candidates"], best):
                    rec["ranked_top"] = cands[j]
            if "generation" in protocols:
                generated = model.generate(
                    input_ids=prompt_ids,
                    attention_mask=prompt_mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                texts = tokenizer.batch_decode(
                    generated[:, prompt_ids.shape[1] :], skip_special_tokens=True
                )
                for rec, text, cands, target in zip(
                    records, texts, batch["candidates"], batch["targets"]
                ):
                    rec["answer"] = text
                    for m in MATCHERS:
                        outcome = judge_generation(text, cands, target, m)
                        suffix = "" if m == matcher else f"_{m}"
                        sums[f"gen_hr@1{suffix}"] = sums.get(f"gen_hr@1{suffix}", 0.0) + outcome.hit
                        sums[f"valid_ratio{suffix}"] = (
                            sums.get(f"valid_ratio{suffix}", 0.0) + outcome.valid
                        )
                        if m == matcher:
                            rec["valid"], rec["hit"] = outcome.valid, outcome.hit
                    nested = has_nested_titles(cands)
                    sums["nested_rows"] = sums.get("nested_rows", 0.0) + nested
            rows.extend(records)
            n += b
    finally:
        model.train(was_training)
    metrics = {
        f"{split}/{k}": (v if k == "nested_rows" else v / max(n, 1)) for k, v in sums.items()
    }
    metrics[f"{split}/rows"] = n
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / f"{split}_predictions.jsonl", "w", encoding="utf-8") as f:
            for rec in rows:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return metrics
