"""Candidate protocols (data.candidates: published | independent) and the shortcut measure."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from recpo.data.candidates import attach_candidates, independent_seed, sample_candidates
from recpo.data.records import Example, ItemCatalog, RecDataset
from recpo.data.shortcut import main, measure_dataset, shared_negatives, shortcut_measure

CATALOG = ItemCatalog({i: f"I{i}" for i in range(300)}, 300)


def reference_independent(history, target, items, seed, n=20):
    """The independent draw written plainly, with the full pool materialised."""
    rng = random.Random(seed)
    pool = [i for i in items if i not in history and i != target]
    ids = rng.sample(pool, n - 1) + [target]
    rng.shuffle(ids)
    return tuple(ids)


@pytest.mark.parametrize("seed", range(10))
def test_independent_lazy_pool_equals_materialised_pool(seed):
    rng = random.Random(seed)
    items = rng.sample(range(1000), 300)
    history = rng.sample(items, rng.randint(0, 10))
    target = rng.choice([i for i in items if i not in history])
    position = {item: i for i, item in enumerate(items)}
    row_seed = independent_seed(seed, "test", seed * 7)
    assert sample_candidates(
        history, target, items, position, seed=row_seed
    ) == reference_independent(history, target, items, row_seed)


def _rows(n: int, target: int = 7) -> list[Example]:
    return [Example((1, 2, 3), target, None, i) for i in range(n)]


def test_published_lists_follow_the_target_independent_do_not():
    """Rows with the same target and history: identical published lists; independent
    lists share only what chance gives (19 * 19 / 296 = 1.2 negatives on average)."""
    published = attach_candidates(_rows(50), CATALOG)
    assert len({ex.candidates for ex in published}) == 1
    independent = attach_candidates(_rows(50), CATALOG, protocol="independent", split="train")
    negs = [set(ex.candidates) - {7} for ex in independent]
    overlaps = [len(a & b) for i, a in enumerate(negs) for b in negs[i + 1 :]]
    assert 0.6 < np.mean(overlaps) < 1.9 and max(overlaps) < 10
    for ex in independent:  # the same exclusion rules
        assert len(set(ex.candidates)) == 20 and 7 in ex.candidates
        assert not {1, 2, 3} & set(ex.candidates)


def test_independent_draws_are_seeded_by_run_split_and_row():
    rows = _rows(5)
    draw = lambda seed, split: [  # noqa: E731
        ex.candidates
        for ex in attach_candidates(rows, CATALOG, protocol="independent", seed=seed, split=split)
    ]
    assert draw(0, "test") == draw(0, "test")
    assert draw(0, "test") != draw(1, "test")
    assert draw(0, "test") != draw(0, "val")
    # The seed is the row's identity: another target at the same position gets
    # the same generator (same draws wherever the pools agree).
    assert independent_seed(0, "test", 3) == "recpo-candidates:0:test:3"


def test_independent_replaces_given_lists_published_keeps_them():
    given = [Example((1, 2, 3), 7, (7, 8, 9), 0)]
    assert attach_candidates(given, CATALOG) == given
    (redrawn,) = attach_candidates(given, CATALOG, protocol="independent", split="test")
    assert len(redrawn.candidates) == 20 and redrawn.candidates != (7, 8, 9)


def test_shared_negatives_by_hand():
    """Test row negatives {1..5}; training rows of its target share 2 and 3 of them,
    a training row of another target shares all 5 (ignored)."""
    train = [
        Example((), 100, (100, 1, 2, 50, 51, 52), 0),
        Example((), 100, (1, 2, 3, 60, 100, 61), 1),
        Example((), 200, (1, 2, 3, 4, 5, 200), 2),
    ]
    test = [
        Example((), 100, (1, 2, 3, 4, 5, 100), 0),
        Example((), 300, (1, 2, 3, 4, 5, 300), 1),
    ]
    assert shared_negatives(train, test) == [3, 0]
    m = shortcut_measure(train, test, threshold=3)
    assert (m.rows, m.mean_shared, m.share_at_least, m.unseen_target) == (2, 1.5, 0.5, 1)


def test_shared_negatives_against_brute_force():
    rng = random.Random(0)
    items = list(range(40))

    def row(i):
        target = rng.randrange(6)
        negs = rng.sample([x for x in items if x != target], 7)
        return Example((), target, tuple(negs + [target]), i)

    train, test = [row(i) for i in range(200)], [row(i) for i in range(50)]
    brute = []
    for ex in test:
        mine = set(ex.candidates) - {ex.target}
        brute.append(
            max(
                [
                    len(mine & (set(t.candidates) - {t.target}))
                    for t in train
                    if t.target == ex.target
                ]
                or [0]
            )
        )
    assert shared_negatives(train, test) == brute


def test_measure_dataset_separates_the_protocols():
    """Many training rows per target: published lists give the shortcut, independent not."""
    rng = random.Random(1)

    def rows(n):
        return [
            Example(tuple(rng.sample(range(20, 300), 3)), rng.randrange(5), None, i)
            for i in range(n)
        ]

    ds = RecDataset("toy", CATALOG, rows(300), rows(40), rows(60))
    m = measure_dataset(ds, splits=("val", "test"))
    assert set(m) == {(p, s) for p in ("published", "independent") for s in ("val", "test")}
    assert m["published", "test"].mean_shared > 15 and m["published", "test"].share_at_least == 1
    assert m["independent", "test"].mean_shared < 5 and m["independent", "test"].share_at_least == 0


def test_shortcut_command_on_synthetic_data(tmp_path, capsys):
    code = main(
        [
            "data.source.synthetic.num_users=60",
            "data.source.synthetic.num_items=80",
            f"paths.cache_dir={tmp_path}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "published" in out and "independent" in out and "share >= 10" in out


def test_lastfm_published_shortcut(data_dir):
    """The figure quoted in the candidates docstring: about 12.4 of 19 negatives, 73.6%."""
    from recpo.data.formats.llara import read_llara

    ds = read_llara(
        directory=data_dir / "lastfm", name="lastfm", padding_id=4606, allow_pickle=True
    )
    m = measure_dataset(ds, protocols=("published",))["published", "test"]
    assert m.rows == 2495 and m.mean_shared == pytest.approx(12.38, abs=0.01)
    assert m.share_at_least == pytest.approx(0.736, abs=0.001)


def test_candidates_key_changes_the_sft_key(tmp_path: Path):
    """The SFT content key hashes the whole data node, so the protocol is part of it
    (with the rows' own content key held fixed where sft_key takes one)."""
    import inspect

    from recpo.training.sft_cache import sft_key
    from tests.conftest import compose

    takes_rows = "rows" in inspect.signature(sft_key).parameters

    def key(overrides: list[str]) -> str:
        cfg = compose(["+experiment=lastfm_dmpo", *overrides], tmp_path)
        return sft_key(cfg, "the same rows") if takes_rows else sft_key(cfg)

    assert compose(["+experiment=lastfm_dmpo"], tmp_path).data.candidates == "published"
    assert key(["data.candidates=published"]) == key([])
    assert key(["data.candidates=independent"]) != key([])


def test_datamodule_builds_independent_lists(tmp_path):
    from recpo.data.datamodule import RecDataModule
    from recpo.data.synthetic import read_synthetic

    source = {
        "reader": read_synthetic,
        "name": "s",
        "cache_dir": str(tmp_path),
        "synthetic": {"num_users": 60, "num_items": 80},
    }
    published = RecDataModule(source=source).load()
    dm = RecDataModule(source=source, candidates="independent", seed=3)
    dm.load()
    test = dm.examples("test")
    assert [ex.candidates for ex in test] == [
        ex.candidates
        for ex in attach_candidates(
            published.test, published.catalog, 20, "", "independent", 3, "test"
        )
    ]
    assert [ex.candidates for ex in test] != [
        ex.candidates for ex in attach_candidates(published.test, published.catalog)
    ]
