"""Time the batched boundary-negative selector + dynamic β against per-example loops.

The authors' code (``trainer/dynamicpo_trainer.py`` of the official DynamicPO
repository) handles one example at a time: it pulls every log-likelihood to a Python
float with ``.item()``, applies Stage I by comparing tensor elements, fits
``sklearn.cluster.KMeans(3, random_state=42)`` when Stage I finds nothing, and
computes β_j negative by negative with scalar tensor arithmetic. Two per-example
baselines re-implement that procedure (they are not the authors' code):

* ``authors``: the same work as the official code, element-wise tensor ops and all;
* ``floats``: the same algorithm on plain Python floats, the cheapest a per-example
  loop around ``KMeans`` can be, hence a lower bound on the speedup.

``batched`` runs what :func:`recpo.objectives.dynamicpo` runs on the whole
``(B, K)`` tensor: :func:`select_boundary_negatives` (exact solver) then
:func:`dynamic_beta`.

Every row is built so that Stage I never fires (the positive beats all negatives):
every row goes through k-means, the worst case for every path. Everything runs on
one CPU thread (``OMP_NUM_THREADS=1`` unless set) and each figure is the best of
many short timing blocks, which keeps them stable on a shared machine. ``agree`` is
the share of rows where the batched and sklearn selections are identical; they
differ where sklearn's single k-means++ start misses the optimal clustering
(``sklearn worse``: its SSE exceeds the exact one).

Usage: ``python benchmarks/bench_selector.py [--blocks 30] [--seed 0]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # must precede the torch / sklearn imports

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import (  # noqa: E402
    authors_select_and_beta,
    load_average,
    machine_description,
    top_cluster_sklearn,
)

from recpo.objectives import dynamic_beta, kmeans_1d_exact, select_boundary_negatives  # noqa: E402

BETA0, ALPHA, GAMMA = 1.0, 0.5, 6.0


def authors_loop(chosen: torch.Tensor, logps: torch.Tensor) -> tuple[list[list[int]], list[float]]:
    """The official code's per-example work (:func:`common.authors_select_and_beta`).

    Returns:
        The selected indices of each row and sklearn's SSE per row (NaN if Stage I fired).
    """
    selections, _, sses = authors_select_and_beta(
        chosen, logps, beta0=BETA0, alpha=ALPHA, gamma=GAMMA
    )
    return selections, sses


def floats_loop(chosen: torch.Tensor, logps: torch.Tensor) -> list[list[int]]:
    """The same per-example algorithm on plain Python floats (the cheapest loop)."""
    selections = []
    for positive, row in zip(chosen.tolist(), logps.tolist()):
        selected = [k for k, value in enumerate(row) if value > positive]
        if not selected:
            selected, _ = top_cluster_sklearn(row)
        rest = [k for k in range(len(row)) if k not in selected] or selected
        easy_mean = sum(row[k] for k in rest) / len(rest)
        for k in selected:
            delta_p, delta_n = positive - row[k], row[k] - easy_mean
            denominator = abs(delta_p) + abs(delta_n)
            ratio = (delta_p - delta_n - GAMMA) / denominator if denominator else -math.inf
            _ = BETA0 * (1 + ALPHA * math.tanh(ratio))
        selections.append(selected)
    return selections


def batched(chosen: torch.Tensor, logps: torch.Tensor) -> torch.Tensor:
    """The plug-in's path: batched selection (exact k-means) then dual-margin β."""
    with torch.inference_mode():
        selection = select_boundary_negatives(logps, chosen)
        dynamic_beta(
            chosen,
            logps,
            selection.selected,
            beta0=BETA0,
            alpha=ALPHA,
            gamma=GAMMA,
            check_finite=False,
        )
    return selection.selected


def per_call_seconds(fn: Callable[[], object], calls: int, blocks: int) -> float:
    """Best over ``blocks`` timing blocks of the mean time of ``calls`` calls.

    The minimum, as ``timeit`` recommends: other load on the machine only adds time.
    """
    for _ in range(calls):
        fn()
    best = math.inf
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def make_batch(batch: int, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-likelihoods around -20 nats; the positive beats every negative."""
    logps = -20.0 + 4.0 * torch.randn(batch, k, generator=generator)
    chosen = logps.max(dim=-1).values + 1.0
    return chosen, logps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=30, help="timing blocks per figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(args.seed)

    print(f"# device: {machine_description('cpu')}; {load_average()} at the start")
    print(
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; times per batch, best of {args.blocks}"
    )
    header = (
        f"{'B':>3} {'K':>3} | {'authors (ms)':>12} {'floats (ms)':>11} {'batched (ms)':>12} | "
        f"{'vs authors':>10} {'vs floats':>9} | {'agree':>5} {'sklearn worse':>13}"
    )
    print(header)
    print("-" * len(header))
    for batch in (4, 32):
        for k in (5, 15, 19):
            chosen, logps = make_batch(batch, k, generator)
            loop_calls = max(1, 8 // batch)
            authors_s = per_call_seconds(
                lambda c=chosen, x=logps: authors_loop(c, x), loop_calls, args.blocks
            )
            floats_s = per_call_seconds(
                lambda c=chosen, x=logps: floats_loop(c, x), loop_calls, args.blocks
            )
            batched_s = per_call_seconds(lambda c=chosen, x=logps: batched(c, x), 20, args.blocks)

            loop_selection, sklearn_sse = authors_loop(chosen, logps)
            fast_selection = batched(chosen, logps)
            agree = np.mean(
                [
                    fast_selection[i].nonzero().flatten().tolist() == sorted(loop_selection[i])
                    for i in range(batch)
                ]
            )
            exact_sse = kmeans_1d_exact(
                logps.double(), torch.ones_like(logps, dtype=torch.bool)
            ).sse
            worse = np.mean(np.asarray(sklearn_sse) > exact_sse.numpy() * (1 + 1e-9) + 1e-9)
            print(
                f"{batch:>3} {k:>3} | {authors_s * 1e3:>12.3f} {floats_s * 1e3:>11.3f} "
                f"{batched_s * 1e3:>12.3f} | {authors_s / batched_s:>9.1f}x {floats_s / batched_s:>8.1f}x | "
                f"{agree:>5.0%} {worse:>13.0%}"
            )


if __name__ == "__main__":
    main()
