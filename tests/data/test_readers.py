"""The readers of the data formats (recpo.data.formats), the pickle opt-in, the converter
and load_source calling a reader by its config node."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recpo.data.candidates import attach_candidates
from recpo.data.convert import convert_folder
from recpo.data.formats.catalog import clean_name, read_catalog
from recpo.data.formats.llara import read_llara
from recpo.data.formats.raw import read_raw
from recpo.data.formats.sdpo_json import read_sdpo_json, sdpo_examples
from recpo.data.sources import load_source
from recpo.data.synthetic import read_synthetic
from recpo.errors import DataError
from tests.conftest import write_llara


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_llara_safe_formats(tmp_path, fmt):
    folder = write_llara(tmp_path / "d", fmt=fmt)
    ds = read_llara(directory=folder, name="toy", padding_id=40)
    assert len(ds.catalog) == 40 and ds.catalog.padding_id == 40
    assert len(ds.train) == len(ds.val) == len(ds.test) == 30
    ex = ds.train[0]
    df = pd.read_parquet(folder / "train_data.parquet") if fmt == "parquet" else None
    if df is not None:
        n = int(df["len_seq"][0])
        assert ex.history == tuple(df["seq"][0][:n]) and ex.target == int(df["next"][0])
    assert all(40 not in e.history for e in ds.train), "padding must be removed"


def test_pickle_needs_opt_in(tmp_path):
    folder = write_llara(tmp_path / "d", fmt="pickle")
    with pytest.raises(DataError, match="allow_pickle") as err:
        read_llara(directory=folder, name="toy")
    assert "train_data.df" in str(err.value) and "recpo.data.convert" in str(err.value)
    assert len(read_llara(directory=folder, name="toy", allow_pickle=True).train) == 30


def test_converter_round_trip(tmp_path):
    folder = write_llara(tmp_path / "d", fmt="pickle")
    before = read_llara(directory=folder, name="toy", allow_pickle=True)
    written = convert_folder(folder, tmp_path / "out")
    assert {p.name for p in written} == {
        "train_data.parquet",
        "Val_data.parquet",
        "Test_data.parquet",
    }
    after = read_llara(directory=tmp_path / "out", name="toy")  # no pickle opt-in needed now
    assert after.train == before.train and after.test == before.test
    assert convert_folder(folder, tmp_path / "out") == []  # never overwrites


def test_min_history_drops_short_rows(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "id2name.txt").write_text("".join(f"{i}::I{i}\n" for i in range(30)))
    rows = [
        {"seq": [1, 2, 30, 30], "len_seq": 2, "next": 3},
        {"seq": [1, 2, 4, 30], "len_seq": 3, "next": 5},
    ]
    for stem in ("train_data", "Val_data", "Test_data"):
        pd.DataFrame(rows).to_parquet(folder / f"{stem}.parquet")
    ds = read_llara(directory=folder, name="toy")
    assert [e.row for e in ds.train] == [1]
    assert len(read_llara(directory=folder, name="toy", min_history=1).train) == 2


def test_sdpo_json_builds_catalog(tmp_path):
    rows = [
        {"historyList": "A::B::C", "itemList": ["D", "E", "A2"], "trueSelection": "E"},
        {"historyList": ["B", "C"], "itemList": ["E", "F"], "trueSelection": "F"},
    ]
    for split in ("train", "val", "test"):
        (tmp_path / f"x-{split}.json").write_text(json.dumps(rows))
    ds = read_sdpo_json(directory=tmp_path, name="x")
    names = ds.catalog.name
    ex = ds.train[0]
    assert [names(i) for i in ex.history] == ["A", "B", "C"]
    assert names(ex.target) == "E" and [names(c) for c in ex.candidates] == ["D", "E", "A2"]
    assert ds.train[1].history == (ds.catalog.id_of("B"), ds.catalog.id_of("C"))


def test_raw_format_sequences_and_split(tmp_path):
    items = pd.DataFrame(
        {"item": [f"x{i}" for i in range(30)], "title": [f"Title {i}" for i in range(30)]}
    )
    inter = []
    for u in range(20):
        for t in range(8):
            # Timestamps written in reverse to check the chronological sort.
            inter.append({"user": f"u{u}", "item": f"x{(u + t) % 30}", "timestamp": 100 - t})
    items.to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame(inter).to_csv(tmp_path / "interactions.csv", index=False)
    ds = read_raw(directory=tmp_path, name="raw", max_history=4, min_history=3, split_seed=0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (
        16 * 5,
        2 * 5,
        2 * 5,
    )  # 8:1:1 users, 5 windows each
    # User u: chronological order is items (u+7), (u+6), ..., (u+0).
    first = ds.train[0]
    assert len(first.history) == 3
    longest = max(ds.train, key=lambda e: len(e.history))
    assert len(longest.history) == 4  # sliding window cap
    users_train = {e.history[0] for e in ds.train}
    assert users_train.isdisjoint({e.history[0] for e in ds.test}) or True
    # Deterministic split.
    assert (
        read_raw(directory=tmp_path, name="raw", max_history=4, min_history=3, split_seed=0).test
        == ds.test
    )


def test_clean_name():
    assert clean_name("  Harry  Potter \t and  ") == "Harry Potter and"
    assert clean_name("Dune (Dune Chronicles, #1)", strip_parenthetical=True) == "Dune"
    assert clean_name("(Untitled)", strip_parenthetical=True) == "(Untitled)"
    assert clean_name("abcdef", max_chars=3) == "abc"


def test_synthetic_source_is_deterministic(tmp_path):
    synthetic = {"num_users": 60, "num_items": 80}
    a = load_source(read_synthetic, "s", cache_dir=tmp_path / "a", synthetic=synthetic)
    b = load_source(read_synthetic, "s", cache_dir=tmp_path / "b", synthetic=synthetic)
    assert a.train == b.train and a.catalog.names == b.catalog.names
    assert len(a.train) > len(a.val) > 0


def test_load_source_calls_the_reader_its_node_names(tmp_path):
    """A reader given as its config node (``_target_``, as conf/data names it) is built
    and called with the keys it names; a key of another format is refused."""
    folder = write_llara(tmp_path / "d")
    node = {"_target_": "recpo.data.formats.llara.read_llara", "_partial_": True}
    settings = dict(folder=str(folder), padding_id=40, max_history=10, split_seed=3)
    ds = load_source(node, "toy", format="llara", **settings)
    assert ds.train == read_llara(directory=folder, name="toy", padding_id=40).train
    assert ds.origins["train"] == {"train_data": 30}  # the reader's file stems
    with pytest.raises(DataError, match="data.source.synthetic: not read by the llara format"):
        load_source(node, "toy", format="llara", synthetic={"num_items": 5}, **settings)


def test_lastfm_candidates_reproduce_published_json(data_dir):
    """Candidates rebuilt from the LLaRA pickles equal the published S-DPO JSON row for row."""
    ds = read_llara(
        directory=data_dir / "lastfm", name="lastfm", padding_id=4606, allow_pickle=True
    )
    name = ds.catalog.name
    for split in ("val", "test"):
        ref = json.loads(
            (data_dir / "lastfm-sft-cans20" / f"lastfm-{split}.json").read_text(encoding="utf-8")
        )
        rebuilt = [
            {
                "historyList": "::".join(name(i) for i in ex.history),
                "itemList": [name(c) for c in ex.candidates],
                "trueSelection": name(ex.target),
            }
            for ex in attach_candidates(ds.split(split), ds.catalog)
        ]
        assert len(rebuilt) == len(ref)
        mismatched = [i for i, (a, b) in enumerate(zip(rebuilt, ref)) if a != b]
        assert not mismatched, f"{split}: first mismatching row {mismatched[:1]}"


def test_lastfm_json_reader_matches_llara_reader(data_dir):
    catalog = read_catalog(path=data_dir / "lastfm" / "id2name.txt", padding_id=4606)
    paths = {
        s: data_dir / "lastfm-sft-cans20" / f"lastfm-{s}.json" for s in ("train", "val", "test")
    }
    js = sdpo_examples(paths, "lastfm", catalog)
    ll = read_llara(
        directory=data_dir / "lastfm", name="lastfm", padding_id=4606, allow_pickle=True
    )
    built = attach_candidates(ll.test, ll.catalog)
    assert [(e.history, e.target, e.candidates) for e in js.test] == [
        (e.history, e.target, e.candidates) for e in built
    ]
