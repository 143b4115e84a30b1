"""Training rows from the history prefixes of part of the val users (data.source.augment_train_from_val)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from recpo.data.augment import (
    augment_train_from_val_users,
    group_users,
    prefix_examples,
    rows_linked_to,
    user_examples,
)
from recpo.data.formats.llara import read_llara
from recpo.data.records import Example, ItemCatalog, RecDataset
from recpo.data.sources import load_source

CATALOG = ItemCatalog({i: f"I{i}" for i in range(200)}, 200)


def _steam_like(num_val: int = 10) -> RecDataset:
    """One row per user: val user u has the sequence 100+10u .. 100+10u+5, disjoint
    from every other user; test users are disjoint too."""
    train = [Example((1, 2, 3), 4, None, 0), Example((2, 3, 4), 5, None, 1)]
    val = [Example(tuple(range(10 * u, 10 * u + 5)), 10 * u + 5, None, u) for u in range(num_val)]
    test = [Example((150 + u, 160 + u, 170 + u), 180 + u, None, u) for u in range(5)]
    return RecDataset("toy", CATALOG, train, val, test)


def test_prefix_examples_by_hand():
    ex = Example((1, 2, 3, 4, 5), 6, None, 7)
    assert [(e.history, e.target, e.row) for e in prefix_examples(ex, 3, 10)] == [
        ((1, 2, 3), 4, 7),
        ((1, 2, 3, 4), 5, 7),
        ((1, 2, 3, 4, 5), 6, 7),
    ]
    # History window of 2 items, at least 1 earlier item.
    assert [(e.history, e.target) for e in prefix_examples(ex, 1, 2)] == [
        ((1,), 2),
        ((1, 2), 3),
        ((2, 3), 4),
        ((3, 4), 5),
        ((4, 5), 6),
    ]


def test_half_of_the_val_users_move_to_training():
    ds = _steam_like(10)
    out = augment_train_from_val_users(ds, 0.5, seed=0, min_history=3)
    moved = [ex for ex in ds.val if ex not in out.val]
    assert len(moved) == 5 and len(out.val) == 5
    assert out.test == ds.test and out.train[:2] == ds.train  # test and train file untouched
    # Each moved user (5 history items + target) gives 3 rows: histories of 3, 4, 5 items.
    added = out.train[2:]
    assert len(added) == 15
    expected = [p for ex in moved for p in prefix_examples(ex, 3, 10)]
    assert added == expected
    # No val row's user is also a training row's user (disjoint item ranges here).
    val_items = {i for ex in out.val for i in (*ex.history, ex.target)}
    assert not val_items & {i for ex in added for i in (*ex.history, ex.target)}
    # Same seed, same users; the run log counts rows by origin.
    assert augment_train_from_val_users(ds, 0.5, seed=0).val == out.val
    assert augment_train_from_val_users(ds, 0.5, seed=1).val != out.val
    assert out.origins["train"] == {"train": 2, "val history prefixes (5 of 10 val users)": 15}
    assert "train 17 rows (2 train + 15 val history prefixes" in out.describe_origins()


def test_val_users_continuing_into_test_are_never_moved(caplog):
    """A test row whose history continues a val row's sequence marks the same user:
    that val row stays in val even when the requested share cannot be met."""
    ds = _steam_like(4)
    # A test row continuing val user 1's sequence (10, ..., 14) + 15.
    test = [*ds.test, Example((11, 12, 13, 14, 15), 16, None, 9)]
    # A val row whose history continues test user 1's sequence (151, 161, 171) + 181.
    val = [*ds.val[:3], Example((151, 161, 171, 181, 1), 2, None, 3)]
    ds = RecDataset("toy", CATALOG, ds.train, val, test)
    assert rows_linked_to(ds.val, ds.test) == {1, 3}
    with caplog.at_level(logging.WARNING):
        out = augment_train_from_val_users(ds, 0.75, seed=0)
    assert "2 of 4 val users may continue into test rows" in caplog.text
    assert out.val == [ds.val[1], ds.val[3]]  # the linked users stay; both others moved
    assert all(ex.history[0] not in (10, 151) for ex in out.train[2:])


def test_users_with_several_rows_move_together_without_duplicate_rows():
    """LastFM-style val users (every prefix is a row) are grouped by continuation;
    a moved user gives back its own rows, each once."""
    user_a = [Example((1, 2, 3), 4, None, 0), Example((1, 2, 3, 4), 5, None, 1)]
    user_a.append(Example((1, 2, 3, 4, 5), 6, None, 2))
    user_b = [Example((50, 51, 52), 53, None, 3), Example((50, 51, 52, 53), 54, None, 4)]
    val = [user_a[0], user_b[0], user_a[1], user_b[1], user_a[2]]
    assert group_users(val, 10) == [[0, 2, 4], [1, 3]]
    assert user_examples(user_a, 3, 10) == user_a
    # Window of 3: row (2,3,4)->5 follows (1,2,3)->4 only through the window.
    windowed = [Example((1, 2, 3), 4, None, 0), Example((2, 3, 4), 5, None, 1)]
    assert group_users(windowed, 3) == [[0, 1]]
    ds = RecDataset("toy", CATALOG, [], val, [Example((90, 91, 92), 93)])
    out = augment_train_from_val_users(ds, 0.5, seed=0)
    assert {len(out.val), len(out.train)} == {2, 3}
    assert sorted(out.val + out.train, key=lambda e: e.row) == sorted(val, key=lambda e: e.row)


def test_load_source_option_and_counts(tmp_path, caplog):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "id2name.txt").write_text("".join(f"{i}::I{i}\n" for i in range(100)))
    rows = {
        "train_sample": [{"seq": [1, 2, 3, 100, 100], "len_seq": 3, "next": 4}],
        "Val_data": [
            {"seq": [10 * u + k for k in range(5)], "len_seq": 5, "next": 10 * u + 5}
            for u in range(1, 5)
        ],
        "Test_data": [{"seq": [60, 61, 62, 63, 100], "len_seq": 4, "next": 64}],
    }
    for stem, recs in rows.items():
        pd.DataFrame(recs).to_parquet(folder / f"{stem}.parquet")
    kwargs = dict(folder=str(folder), padding_id=100, files={"train": "train_sample"})
    plain = load_source(read_llara, "toy", **kwargs)
    assert (len(plain.train), len(plain.val)) == (1, 4)
    with caplog.at_level(logging.INFO, logger="recpo.data.sources"):
        out = load_source(read_llara, "toy", augment_train_from_val=0.5, **kwargs)
    assert (len(out.train), len(out.val), len(out.test)) == (1 + 2 * 3, 2, 1)
    assert out.origins["train"] == {
        "train_sample": 1,
        "val history prefixes (2 of 4 val users)": 6,
    }
    assert "train 7 rows (1 train_sample + 6 val history prefixes" in caplog.text


def test_steam_config_defaults_to_the_augmented_split(tmp_path):
    from tests.conftest import compose

    cfg = compose(["+experiment=steam_dynamicpo"], tmp_path)
    assert cfg.data.source.augment_train_from_val == 0.5
    assert cfg.data.source.split_seed == 0  # the same val users for every run seed
    assert compose(["data=lastfm"], tmp_path).data.source.get("augment_train_from_val", 0) == 0


def test_steam_real_files(data_dir):
    """On the real Steam files: half of the 1,184 val users move, no test link."""
    ds = load_source(
        read_llara,
        "steam",
        data_dir=data_dir,
        padding_id=3581,
        files={"train": "train_sample_1000"},
        allow_pickle=True,
        augment_train_from_val=0.5,
    )
    assert len(ds.test) == 1186 and len(ds.val) == 592
    assert len(ds.train) > 1000 + 592 * 3
    sequences = {(*ex.history, ex.target) for ex in ds.train[1000:]}
    assert not sequences & {(*ex.history, ex.target) for ex in ds.val + ds.test}


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2])
def test_fraction_must_leave_val_rows(fraction):
    from recpo.errors import DataError

    with pytest.raises(DataError, match=r"augment_train_from_val must be in \[0, 1\)"):
        augment_train_from_val_users(_steam_like(4), fraction, 0)
