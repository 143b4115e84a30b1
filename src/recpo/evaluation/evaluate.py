"""Run both evaluation protocols over a split and summarise them.

* ``ranking``: score all candidates by sequence log-prob (one shared forward per
  prompt) -> ``hr@1``, ``hr@5``, ``ndcg@5``.
* ``generation`` (the paper's): greedy decoding of at most ``max_new_tokens``;
  ``gen_hr@1`` = hits / rows and ``valid_ratio`` = valid / rows under the chosen
  matcher, plus the same under the other matcher and the number of rows whose
  candidates contain nested titles.

With both protocols and shared scoring, generation decodes from the keys and values
the ranking forward stored for the prompt (:func:`prompt_cache_for`), so each prompt
runs through the model once per batch.

Each protocol is one function over a batch (:func:`rank_batch`,
:func:`generate_batch`) returning summed metrics and one record per row;
:func:`evaluate_split` runs the chosen ones over a split, averages the sums over
the rows and writes the records with :func:`write_predictions`;
:func:`evaluate_model` does it for every split ``cfg.eval`` names and
:func:`summary_table` prints what the stages of a run measured.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from recpo.evaluation.metrics import has_nested_titles, judge_generation, ranking_metrics
from recpo.models.precision import autocast_for
from recpo.models.scoring import (
    cache_argument,
    left_align,
    score_answers,
    score_answers_shared,
)
from recpo.ranks import gather_to_rank_zero, is_rank_zero, rank_and_world

log = logging.getLogger(__name__)

MATCHERS = ("substring", "strict")
PROTOCOLS = ("ranking", "generation")  # eval.protocols

Sums = dict[str, float]


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def _add(sums: Sums, key: str, value: float) -> None:
    sums[key] = sums.get(key, 0.0) + value


def _merge(sums: Sums, rows: list[dict], result: tuple[Sums, list[dict]]) -> None:
    """Add one protocol's batch sums to ``sums`` and its per-row fields to ``rows``."""
    batch_sums, fields = result
    for key, value in batch_sums.items():
        _add(sums, key, value)
    for row, extra in zip(rows, fields):
        row.update(extra)


def prompt_cache_for(model: Any, protocols: tuple[str, ...], scoring: str) -> Any:
    """An empty ``DynamicCache`` when one batch's ranking can hand its prompt keys and
    values to generation (both protocols, shared scoring, a decoder with ``eager`` or
    ``sdpa`` attention); ``None`` otherwise (each protocol runs the prompt itself)."""
    if not {"ranking", "generation"} <= set(protocols) or scoring != "shared":
        return None
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("eager", "sdpa"):
        return None
    from transformers import DynamicCache

    return DynamicCache()


@torch.no_grad()
def rank_batch(
    model: Any, batch: dict, scoring: str = "shared", prompt_cache: Any = None
) -> tuple[Sums, list[dict]]:
    """Ranking protocol on one batch.

    ``prompt_cache`` (shared scoring only), an empty ``DynamicCache`` from
    :func:`prompt_cache_for`, is filled with the prompt's keys and values for
    :func:`generate_batch`.

    Returns:
        ``hr@k`` / ``ndcg@k`` summed over the rows, and per row ``{"ranked_top": title}``
        (the highest-scoring candidate).
    """
    device = _device_of(model)
    inputs = (
        model,
        batch["prompt_ids"].to(device),
        batch["prompt_mask"].to(device),
        batch["answer_ids"].to(device),
        batch["answer_mask"].to(device),
    )
    if prompt_cache is None:
        scores = score_answers(*inputs, method=scoring).logps
    else:
        scores = score_answers_shared(*inputs, prompt_cache=prompt_cache).logps
    per_row = ranking_metrics(scores.float(), batch["target_index"].to(device))
    sums = {key: float(value.sum()) for key, value in per_row.items()}
    best = scores.argmax(dim=1).tolist()
    return sums, [{"ranked_top": cands[j]} for cands, j in zip(batch["candidates"], best)]


@torch.no_grad()
def generate_batch(
    model: Any,
    tokenizer: Any,
    batch: dict,
    max_new_tokens: int = 20,
    matcher: str = "substring",
    prompt_cache: Any = None,
) -> tuple[Sums, list[dict]]:
    """Generation protocol on one batch: greedy answers judged under both matchers.

    ``prompt_cache``, filled by :func:`rank_batch` on the same batch, holds the
    prompt's keys and values: decoding then starts from it (the prompt, left-aligned,
    is not run again).

    Returns:
        Summed ``gen_hr@1`` and ``valid_ratio`` under ``matcher`` and, suffixed with its
        name (``gen_hr@1_strict``), under the other; ``nested_rows``, the rows whose
        candidates contain nested titles. Per row ``{"answer", "valid", "hit"}``, the
        judgement under ``matcher``.
    """
    device = _device_of(model)
    prompt_ids, prompt_mask = batch["prompt_ids"].to(device), batch["prompt_mask"].to(device)
    cached = {}
    if prompt_cache is not None:
        prompt_ids, prompt_mask = left_align(prompt_ids, prompt_mask)
        cached[cache_argument(model)] = prompt_cache
    generated = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        **cached,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    texts = tokenizer.batch_decode(generated[:, prompt_ids.shape[1] :], skip_special_tokens=True)
    sums: Sums = {}
    records = []
    for text, cands, target in zip(texts, batch["candidates"], batch["targets"]):
        record = {"answer": text}
        for m in MATCHERS:
            outcome = judge_generation(text, cands, target, m)
            suffix = "" if m == matcher else f"_{m}"
            _add(sums, f"gen_hr@1{suffix}", outcome.hit)
            _add(sums, f"valid_ratio{suffix}", outcome.valid)
            if m == matcher:
                record["valid"], record["hit"] = outcome.valid, outcome.hit
        _add(sums, "nested_rows", has_nested_titles(cands))
        records.append(record)
    return sums, records


def write_predictions(records: list[dict], path: Path) -> None:
    """One JSON object a line (titles as written, not escaped); creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _fingerprint(model: Any) -> list[float]:
    """A cheap identity of the weights: the parameter count and the sums of the first
    and last two parameter tensors."""
    params = list(model.parameters())
    picked = params[:2] + params[-2:]
    return [float(sum(p.numel() for p in params))] + [
        round(float(p.detach().float().sum()), 4) for p in picked
    ]


class _Progress:
    """``<split>_progress.jsonl`` beside the predictions: a header (the settings and
    the model's fingerprint), then one line per finished batch (its rows, sums and
    records). An interrupted evaluation resumes from it when the header and the
    rows of every stored batch match; it is removed once the split is done."""

    def __init__(self, path: Path | None, header: dict[str, Any]):
        self.path = path
        self.header = header
        self.batches: list[dict[str, Any]] = []
        if path is None or not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        try:
            stored = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            stored = None
        if stored != json.loads(json.dumps(header)):
            return
        for line in lines[1:]:
            try:
                self.batches.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short when the run was stopped
                break

    def start(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.header) + "\n")
            for batch in self.batches:
                f.write(json.dumps(batch, ensure_ascii=False) + "\n")

    def add(self, rows: list[Any], sums: Sums, records: list[dict]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            line = {"rows": rows, "sums": sums, "records": records}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def shard_batches(loader: Any, rank: int, world_size: int) -> tuple[list[int], Any]:
    """The batches of ``loader`` (in order, not shuffled) that ``rank`` of ``world_size``
    evaluates: every ``world_size``-th from ``rank``, each with the rows one process
    would put in it. Returns their indices and a loader over them."""
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    if world_size == 1:
        return list(range(len(loader))), loader
    if not isinstance(loader.sampler, SequentialSampler):
        raise ValueError("sharded evaluation needs an evaluation loader in row order")
    batches = list(BatchSampler(loader.sampler, loader.batch_size, drop_last=False))
    own = list(range(rank, len(batches), world_size))
    shard = DataLoader(
        loader.dataset,
        batch_sampler=[batches[i] for i in own],
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
    )
    return own, shard


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

    With ``out_dir``, each finished batch is also appended to
    ``{split}_progress.jsonl``, so a stopped evaluation (hours for a large model on a
    CPU) resumes after the last finished batch when run again with the same model,
    settings and rows; batches stored under other settings are computed again.

    In an open process group (after a multi-device fit) each rank evaluates every
    ``world``-th batch (:func:`shard_batches`) with its own progress file
    (``{split}_progress.rank<r>of<world>.jsonl``); rank 0 gathers the batches and adds
    them up in row order, so metrics and predictions are those of one process.

    Returns:
        Metrics keyed ``{split}/<name>``: the protocols' sums over the rows divided by
        the number of rows (``nested_rows`` stays a count), and ``{split}/rows``
        (``{}`` on ranks other than 0).
    """
    if matcher not in MATCHERS:
        raise ValueError(f"eval.matcher must be one of {MATCHERS}, got {matcher!r}")
    rank, world = rank_and_world()
    header = {
        "split": split,
        "protocols": list(protocols),
        "max_new_tokens": max_new_tokens,
        "matcher": matcher,
        "scoring": scoring,
        "model": _fingerprint(model),
    }
    name = f"{split}_progress.jsonl"
    if world > 1:
        header["shard"] = [rank, world]
        name = f"{split}_progress.rank{rank}of{world}.jsonl"
    progress = _Progress(None if out_dir is None else out_dir / name, header)
    stored = progress.batches
    indices, shard = shard_batches(loader, rank, world)
    if world > 1:
        log.info(
            "evaluating %s on rank %d of %d: %d of %d batches",
            split,
            rank,
            world,
            len(indices),
            len(loader),
        )
    done: list[tuple[int, Sums, list[dict]]] = []  # (batch index, sums, records)
    was_training = model.training
    model.eval()
    try:
        reusing = True  # still taking batches from the progress file
        batches = tqdm(shard, desc=f"eval {split}", leave=False, disable=rank != 0)
        for i, (index, batch) in enumerate(zip(indices, batches)):
            rows = json.loads(json.dumps(list(batch["rows"])))
            if reusing and i < len(stored) and stored[i]["rows"] == rows:
                done.append((index, stored[i]["sums"], stored[i]["records"]))
                continue
            if reusing:  # keep the batches reused so far, compute the rest
                reusing = False
                progress.batches = stored[:i]
                progress.start()
            batch_sums: Sums = {}
            batch_records = [{"row": r, "target": t} for r, t in zip(rows, batch["targets"])]
            cache = prompt_cache_for(model, protocols, scoring)
            if "ranking" in protocols:
                _merge(batch_sums, batch_records, rank_batch(model, batch, scoring, cache))
            if "generation" in protocols:
                generation = generate_batch(
                    model, tokenizer, batch, max_new_tokens, matcher, prompt_cache=cache
                )
                _merge(batch_sums, batch_records, generation)
            progress.add(rows, batch_sums, batch_records)
            done.append((index, batch_sums, batch_records))
    finally:
        model.train(was_training)
    shards = gather_to_rank_zero(done)
    progress.finish()
    if shards is None:
        return {}
    sums: Sums = {}
    records: list[dict] = []
    # Added up in row order, as one process adds them.
    for _, batch_sums, batch_records in sorted(
        (b for part in shards for b in part), key=lambda b: b[0]
    ):
        _merge(sums, [], (batch_sums, []))
        records.extend(batch_records)
    n = len(records)
    metrics = {
        f"{split}/{k}": (v if k == "nested_rows" else v / max(n, 1)) for k, v in sums.items()
    }
    metrics[f"{split}/rows"] = n
    if out_dir is not None:
        write_predictions(records, out_dir / f"{split}_predictions.jsonl")
    return metrics


def evaluate_model(
    cfg: DictConfig, model: Any, tokenizer: Any, dm: Any, out: Path
) -> dict[str, float]:
    """The protocols of ``cfg.eval`` on each of its splits (``dm``'s evaluation
    loaders); predictions are written to ``out``. On a GPU run the model is moved to
    the GPU first (Lightning hands it back on the CPU after fit). Under a mixed
    ``trainer.precision`` (``bf16-mixed``) it runs in the autocast training used.

    Every rank of an open process group evaluates its share of the rows
    (:func:`evaluate_split`); the metrics are rank 0's (``{}`` elsewhere). A rank
    outside a process group other than rank 0 evaluates nothing."""
    if rank_and_world()[1] == 1 and not is_rank_zero():
        return {}
    if (
        cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto")
        and torch.cuda.is_available()
        and _device_of(model).type == "cpu"
        and not getattr(model, "is_loaded_in_4bit", False)
    ):
        model.to(torch.device("cuda", torch.cuda.current_device()))
    metrics: dict[str, float] = {}
    for split in cfg.eval.splits:
        with autocast_for(cfg.trainer.get("precision"), _device_of(model)):
            metrics.update(
                evaluate_split(
                    model,
                    tokenizer,
                    dm.eval_dataloader(split),
                    split,
                    protocols=tuple(cfg.eval.protocols),
                    max_new_tokens=cfg.eval.max_new_tokens,
                    matcher=cfg.eval.matcher,
                    scoring=cfg.scoring,
                    out_dir=out,
                )
            )
    return metrics


SUMMARY_COLUMNS = (
    ("gen_hr@1", "HitRatio@1"),
    ("valid_ratio", "ValidRatio"),
    ("hr@1", "rank HR@1"),
    ("hr@5", "rank HR@5"),
    ("ndcg@5", "rank NDCG@5"),
)


def summary_table(results: dict[str, dict[str, float]], split: str = "test") -> str:
    """A small text table of ``split``: one line per evaluated stage."""
    lines = [f"{split:<10}" + "".join(f"{title:>13}" for _, title in SUMMARY_COLUMNS)]
    for tag, metrics in results.items():
        cells = "".join(
            f"{metrics[f'{split}/{key}']:>13.4f}" if f"{split}/{key}" in metrics else f"{'-':>13}"
            for key, _ in SUMMARY_COLUMNS
        )
        lines.append(f"{tag:<10}{cells}")
    return "\n".join(lines)
