"""What the generations that miss the candidate list are, for one or more evaluations.

Each invalid answer (no candidate title matched, see ``recpo.evaluation.metrics``) of a
``<split>_predictions.jsonl`` is put in the first class it fits:

* ``empty``: nothing but white space (the model ended or started a new line);
* ``history``: a title from the row's own history;
* ``prefix``: the start of a candidate title, cut short;
* ``candidate+``: a candidate title followed by more text;
* ``catalogue``: another item of the dataset, not in this row's list;
* ``near``: no item, but close to a candidate (difflib ratio >= 0.6, case-folded);
* ``other``: none of these (a name from outside the dataset, or text).

With more than one file, a second table compares each later file's validity with the
first one's, row by row (e.g. the SFT model's predictions first, then the PO runs from
it): rows that became invalid, rows that became valid, the exact two-sided McNemar p on
those rows and its Holm adjustment over the later files.

The candidate lists are rebuilt as a run builds them, from the training config and the
given overrides (the protocol and seed must be the run's)::

    python experiments/lastfm_smollm2/invalid_answers.py \\
        RUN/eval/sft/test_predictions.jsonl RUN/eval/po/test_predictions.jsonl \\
        -- data=lastfm paths.data_dir=../shared/data
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("empty", "history", "prefix", "candidate+", "catalogue", "near", "other")
NEAR = 0.6


def classify(answer: str, history: list[str], candidates: list[str], catalogue: set[str]) -> str:
    """The class of one invalid answer (see the module docstring)."""
    a = answer.strip()
    if not a:
        return "empty"
    if a in history:
        return "history"
    if any(c.startswith(a) for c in candidates):
        return "prefix"
    if any(a.startswith(c) for c in candidates):
        return "candidate+"
    if a in catalogue:
        return "catalogue"
    folded = a.casefold()
    ratio = max(difflib.SequenceMatcher(None, folded, c.casefold()).ratio() for c in candidates)
    return "near" if ratio >= NEAR else "other"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s PREDICTIONS... [--split SPLIT] -- OVERRIDE...",
    )
    parser.add_argument("predictions", nargs="+", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--show", default="", help="print the answers of this class")
    args = parser.parse_args(argv[:cut])
    overrides = argv[cut + 1 :]
    sys.path.insert(0, str(REPO / "src"))
    from recpo.data.shortcut import load_run_split

    ds, rows = load_run_split(overrides, args.split)
    by_row = {ex.row: ex for ex in rows}
    names = ds.catalog.names
    catalogue = set(names.values())
    print(f"| predictions | rows | invalid | {' | '.join(CLASSES)} |")
    print("|---|---:|---:|" + "---:|" * len(CLASSES))
    validity: list[dict[int, bool]] = []
    for path in args.predictions:
        counts: Counter[str] = Counter()
        total = 0
        valid: dict[int, bool] = {}
        validity.append(valid)
        with path.open() as f:
            for line in f:
                record = json.loads(line)
                total += 1
                valid[record["row"]] = bool(record["valid"])
                if record["valid"]:
                    continue
                ex = by_row.get(record["row"])
                if ex is None:
                    print(f"{path}: row {record['row']} is not in the {args.split} split")
                    return 2
                kind = classify(
                    record["answer"],
                    [names[i] for i in ex.history],
                    [names[i] for i in ex.candidates],
                    catalogue,
                )
                counts[kind] += 1
                if kind == args.show:
                    print(f"  {path.parent.name} row {record['row']}: {record['answer']!r}")
        cells = " | ".join(str(counts[c]) for c in CLASSES)
        print(f"| {path} | {total} | {sum(counts.values())} | {cells} |")
    if len(args.predictions) > 1:
        return print_validity_changes(args.predictions, validity)
    return 0


def validity_changes(first: dict[int, bool], other: dict[int, bool]) -> tuple[int, int]:
    """Rows valid in ``first`` and invalid in ``other``, and the reverse (the discordant
    rows of ``recpo.report.rows.compare`` on validity)."""
    import numpy as np

    from recpo.report.rows import RowOutcomes, compare

    if first.keys() != other.keys():
        raise ValueError("the predictions files do not hold the same rows")

    def outcomes(valid: dict[int, bool]) -> RowOutcomes:
        rows = sorted(valid)
        return RowOutcomes(np.array(rows), {"valid": np.array([valid[r] for r in rows])})

    test = compare(outcomes(first), outcomes(other), "valid")
    return (test.won, test.lost) if test else (0, 0)


def print_validity_changes(paths: list[Path], validity: list[dict[int, bool]]) -> int:
    from recpo.report.rows import mcnemar_exact
    from recpo.report.stats import holm

    changes = []
    for path, other in zip(paths[1:], validity[1:]):
        try:
            changes.append(validity_changes(validity[0], other))
        except ValueError:
            print(f"{path}: not the same rows as {paths[0]}")
            return 2
    pvalues = [mcnemar_exact(*c) for c in changes]
    print(f"\nValidity against {paths[0]} (exact McNemar; Holm over the {len(changes)} files):\n")
    print("| predictions | became invalid | became valid | p | p Holm |")
    print("|---|---:|---:|---:|---:|")
    for path, (worse, better), p, p_holm in zip(paths[1:], changes, pvalues, holm(pvalues)):
        print(f"| {path} | {worse} | {better} | {p:.3g} | {p_holm:.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
