"""The target -> candidate-list shortcut of a dataset, under each candidate protocol.

Under the published protocol a row's candidate list is seeded by its target, so
rows with the same target get nearly the same 19 negatives: a model can learn
which list goes with which target instead of learning from the history. This
measures how much of that association an evaluation row can exploit: for each
row, the largest number of its negatives that a single training row with the same
target also has; averaged over the rows, with the share of rows at or above a
threshold (10 of 19 by default)::

    python -m recpo.data.shortcut data=lastfm paths.data_dir=../shared/data
    python -m recpo.data.shortcut data=steam paths.data_dir=../shared/data --splits val test

Arguments of the form ``key=value`` are overrides of the training config
(:func:`recpo.config.compose`), so the measured rows are exactly those a run reads.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass

from recpo.data.candidates import PROTOCOLS, attach_candidates
from recpo.data.records import Example, RecDataset
from recpo.errors import DataError


def negatives(ex: Example) -> frozenset[int]:
    return frozenset(c for c in ex.candidates if c != ex.target)


def shared_negatives(train: list[Example], rows: list[Example]) -> list[int]:
    """For each row, the most negatives it shares with one training row of its target.

    Returns:
        One count per row of ``rows`` (0 when no training row has its target).
    """
    by_target: dict[int, set[frozenset[int]]] = defaultdict(set)
    for ex in train:
        by_target[ex.target].add(negatives(ex))
    out = []
    for ex in rows:
        negs = negatives(ex)
        out.append(max((len(negs & other) for other in by_target.get(ex.target, ())), default=0))
    return out


@dataclass(frozen=True)
class ShortcutMeasure:
    """The shortcut measure of one split.

    Attributes:
        rows: Rows measured.
        mean_shared: Mean over rows of the most negatives shared with one training
            row of the same target.
        share_at_least: Share of rows sharing at least ``threshold`` negatives.
        threshold: The threshold of ``share_at_least``.
        unseen_target: Rows whose target is the target of no training row.
    """

    rows: int
    mean_shared: float
    share_at_least: float
    threshold: int
    unseen_target: int


def shortcut_measure(
    train: list[Example], rows: list[Example], threshold: int = 10
) -> ShortcutMeasure:
    """The shortcut measure of ``rows`` against ``train`` (both with candidates)."""
    if not rows:
        raise DataError("no rows to measure")
    counts = shared_negatives(train, rows)
    targets = {ex.target for ex in train}
    return ShortcutMeasure(
        rows=len(rows),
        mean_shared=sum(counts) / len(counts),
        share_at_least=sum(c >= threshold for c in counts) / len(counts),
        threshold=threshold,
        unseen_target=sum(ex.target not in targets for ex in rows),
    )


def with_candidates(
    ds: RecDataset, split: str, protocol: str, num_candidates: int, seed: int
) -> list[Example]:
    """The rows of ``split`` with their candidate lists, built as a run builds them."""
    return attach_candidates(
        ds.split(split), ds.catalog, num_candidates, split, protocol, seed, split
    )


def measure_dataset(
    ds: RecDataset,
    protocols: tuple[str, ...] = PROTOCOLS,
    splits: tuple[str, ...] = ("test",),
    num_candidates: int = 20,
    seed: int = 0,
    threshold: int = 10,
) -> dict[tuple[str, str], ShortcutMeasure]:
    """The measure of each (protocol, split), candidates built as a run builds them."""
    out = {}
    for protocol in protocols:
        built = {
            split: with_candidates(ds, split, protocol, num_candidates, seed)
            for split in ("train", *splits)
        }
        for split in splits:
            out[protocol, split] = shortcut_measure(built["train"], built[split], threshold)
    return out


def format_table(name: str, measures: dict[tuple[str, str], ShortcutMeasure]) -> str:
    threshold = next(iter(measures.values())).threshold
    lines = [
        f"{name}: negatives a row shares with one training row of the same target",
        f"{'protocol':<12} {'split':<6} {'rows':>6} {'mean shared':>12} "
        f"{f'share >= {threshold}':>13} {'unseen target':>14}",
    ]
    for (protocol, split), m in measures.items():
        lines.append(
            f"{protocol:<12} {split:<6} {m.rows:>6} {m.mean_shared:>12.2f} "
            f"{m.share_at_least:>13.1%} {m.unseen_target:>14}"
        )
    return "\n".join(lines)


def _load(overrides: list[str]):
    """The composed config and its dataset."""
    from omegaconf import OmegaConf

    from recpo.config import compose
    from recpo.data.sources import load_source

    cfg = compose(overrides, output_dir=".")
    return cfg, load_source(**OmegaConf.to_container(cfg.data.source, resolve=True))


def load_from_overrides(overrides: list[str]) -> tuple[RecDataset, int, int]:
    """The dataset, the number of candidates and the run seed of a composed config."""
    cfg, ds = _load(overrides)
    return ds, int(cfg.data.num_candidates), int(cfg.data.seed)


def load_run_split(overrides: list[str], split: str) -> tuple[RecDataset, list[Example]]:
    """The dataset of a composed config and the rows of ``split`` with the candidate
    lists a run with that config evaluates (its protocol, number of candidates and seed)."""
    cfg, ds = _load(overrides)
    rows = with_candidates(
        ds, split, str(cfg.data.candidates), int(cfg.data.num_candidates), int(cfg.data.seed)
    )
    return ds, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data=lastfm")
    parser.add_argument("--splits", nargs="+", default=["test"], choices=["val", "test"])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--threshold", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        ds, num_candidates, seed = load_from_overrides(args.overrides)
        measures = measure_dataset(
            ds, tuple(args.protocols), tuple(args.splits), num_candidates, seed, args.threshold
        )
    except DataError as err:
        print(f"data error: {err}", file=sys.stderr)
        return 2
    print(format_table(ds.name, measures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
