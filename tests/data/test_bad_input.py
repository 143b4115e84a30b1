"""Bad input: every case gives a DataError naming the file, the row and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recpo.data.candidates import validate_candidates
from recpo.data.formats.llara import read_llara
from recpo.data.formats.raw import read_raw
from recpo.data.formats.sdpo_json import read_sdpo_json
from recpo.data.records import Example, ItemCatalog
from recpo.data.sources import load_source
from recpo.errors import DataError
from tests.conftest import write_llara


def _llara(tmp_path: Path, rows: list[dict], names: str | bytes | None = None) -> Path:
    folder = write_llara(tmp_path / "d", num_items=30, rows=5)
    if names is not None:
        data = names if isinstance(names, bytes) else names.encode()
        (folder / "id2name.txt").write_bytes(data)
    pd.DataFrame(rows).to_parquet(folder / "train_data.parquet")
    return folder


def _sdpo(tmp_path: Path, rows: list[dict]) -> Path:
    """A folder of S-DPO JSON files ``x-{train,val,test}.json``, each holding ``rows``."""
    for split in ("train", "val", "test"):
        (tmp_path / f"x-{split}.json").write_text(json.dumps(rows))
    return tmp_path


GOOD = {"seq": [1, 2, 3, 30], "len_seq": 3, "next": 4}


def case_missing_file(tmp_path):
    folder = write_llara(tmp_path / "d")
    (folder / "Val_data.parquet").unlink()
    read_llara(directory=folder, name="toy")


def case_missing_id2name(tmp_path):
    folder = write_llara(tmp_path / "d")
    (folder / "id2name.txt").unlink()
    read_llara(directory=folder, name="toy")


def case_missing_column(tmp_path):
    read_llara(directory=_llara(tmp_path, [{"seq": [1, 2, 3], "next": 4}]), name="toy")


def case_unknown_history_item(tmp_path):
    read_llara(
        directory=_llara(tmp_path, [GOOD, {"seq": [1, 2, 99, 30], "len_seq": 3, "next": 4}]),
        name="toy",
        padding_id=30,
    )


def case_unknown_target(tmp_path):
    read_llara(
        directory=_llara(tmp_path, [GOOD, {"seq": [1, 2, 3, 30], "len_seq": 3, "next": 77}]),
        name="toy",
        padding_id=30,
    )


def case_bad_len_seq(tmp_path):
    read_llara(
        directory=_llara(tmp_path, [GOOD, {"seq": [1, 2], "len_seq": 5, "next": 4}]),
        name="toy",
        padding_id=30,
    )


def case_non_utf8_title(tmp_path):
    names = b"0::Alpha\n1::Caf\xe9\n" + b"".join(f"{i}::I{i}\n".encode() for i in range(2, 30))
    read_llara(directory=_llara(tmp_path, [GOOD], names=names), name="toy", padding_id=30)


def case_bad_id2name_line(tmp_path):
    read_llara(directory=_llara(tmp_path, [GOOD], names="0::A\n1 B\n"), name="toy")


def case_empty_history_json(tmp_path):
    read_sdpo_json(
        directory=_sdpo(
            tmp_path, [{"historyList": "", "itemList": ["A", "B"], "trueSelection": "A"}]
        ),
        name="x",
    )


def case_missing_json_key(tmp_path):
    read_sdpo_json(
        directory=_sdpo(tmp_path, [{"historyList": "A", "itemList": ["A", "B"]}]), name="x"
    )


def case_unknown_json_name(tmp_path):
    folder = _sdpo(tmp_path, [{"historyList": "A", "itemList": ["B", "Zed"], "trueSelection": "B"}])
    (folder / "id2name.txt").write_text("0::A\n1::B\n2::C\n")  # the catalog, read when present
    read_sdpo_json(directory=folder, name="x")


def case_json_row_not_an_object(tmp_path):
    read_sdpo_json(directory=_sdpo(tmp_path, [["A", "B"]]), name="x")


def case_json_item_list_not_titles(tmp_path):
    read_sdpo_json(
        directory=_sdpo(
            tmp_path, [{"historyList": "A", "itemList": ["B", 3], "trueSelection": "B"}]
        ),
        name="x",
    )


def case_json_history_not_titles(tmp_path):
    read_sdpo_json(
        directory=_sdpo(
            tmp_path, [{"historyList": 12, "itemList": ["A", "B"], "trueSelection": "B"}]
        ),
        name="x",
    )


def case_json_selection_not_a_title(tmp_path):
    read_sdpo_json(
        directory=_sdpo(
            tmp_path, [{"historyList": "A", "itemList": ["A", "B"], "trueSelection": ["B"]}]
        ),
        name="x",
    )


def _validate(example: Example, min_candidates: int = 2):
    catalog = ItemCatalog({i: f"I{i}" for i in range(30)}, 30)
    validate_candidates(
        [Example((1,), 2, (9, 9, 9), row=0), example][1:], min_candidates, "train.json", catalog
    )


def case_target_absent_from_candidates(tmp_path):
    _validate(Example((1, 2), 5, (6, 7, 8), row=3))


def case_duplicate_candidates(tmp_path):
    _validate(Example((1, 2), 5, (5, 7, 7), row=3))


def case_too_few_candidates(tmp_path):
    _validate(Example((1, 2), 5, (5, 7, 8), row=3), min_candidates=16)


def case_unknown_candidate(tmp_path):
    _validate(Example((1, 2), 5, (5, 7, 123), row=3))


def case_raw_unknown_item(tmp_path):
    pd.DataFrame({"item": ["a", "b"], "title": ["A", "B"]}).to_csv(
        tmp_path / "items.csv", index=False
    )
    pd.DataFrame({"user": [1, 1], "item": ["a", "zz"], "timestamp": [1, 2]}).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    read_raw(directory=tmp_path, name="raw")


def case_no_data_dir(tmp_path, monkeypatch=None):
    import os

    os.environ.pop("RECPO_DATA_DIR", None)
    load_source(read_llara, "lastfm", data_dir=None)


def _llara_cells(tmp_path: Path, row: dict) -> Path:
    """A folder whose train table is a pickle (cells of any Python type) with a good
    row 0 and the given row 1."""
    folder = write_llara(tmp_path / "d", num_items=30, rows=5, fmt="pickle")
    pd.DataFrame([GOOD, row]).to_pickle(folder / "train_data.df")
    return folder


def _read_cells(tmp_path: Path, **row):
    read_llara(
        directory=_llara_cells(tmp_path, {**GOOD, **row}),
        name="toy",
        padding_id=30,
        allow_pickle=True,
    )


def case_seq_not_a_list(tmp_path):
    _read_cells(tmp_path, seq="1 2 3")


def case_seq_entry_not_integer(tmp_path):
    _read_cells(tmp_path, seq=[1, 2.5, 3, 30])


def case_seq_entry_missing(tmp_path):
    _read_cells(tmp_path, seq=[1, None, 3, 30])


def case_seq_mixes_ids_and_pairs(tmp_path):
    _read_cells(tmp_path, seq=[(1, 5), (2, 4), 3, (30, 0)])


def case_pair_too_short(tmp_path):
    _read_cells(tmp_path, seq=[(1,), (2,), (3,), (30,)])


def case_pair_item_not_integer(tmp_path):
    _read_cells(tmp_path, seq=[("a", 5), (2, 4), (3, 5), (30, 0)])


def case_next_is_text(tmp_path):
    _read_cells(tmp_path, next="4")


def case_next_missing(tmp_path):
    _read_cells(tmp_path, next=None)


def case_next_empty_pair(tmp_path):
    _read_cells(tmp_path, next=())


def case_len_seq_not_integer(tmp_path):
    _read_cells(tmp_path, len_seq=2.5)


def case_len_seq_negative(tmp_path):
    _read_cells(tmp_path, len_seq=-1)


def _u_item(tmp_path: Path, data: bytes, **catalog):
    folder = write_llara(tmp_path / "d", num_items=30, rows=5)
    (folder / "u.item").write_bytes(data)
    fmt = {"file": "u.item", "format": "delimited", "separator": "|", "id_offset": -1}
    read_llara(directory=folder, name="toy", catalog={**fmt, **catalog})


U_ITEM = "".join(f"{i}|Movie {i} (1990)|01-Jan-1990||http://x/{i}|0|1\n" for i in range(1, 31))


def case_u_item_too_few_fields(tmp_path):
    _u_item(tmp_path, b"1|A (1990)|x\n2\n" + U_ITEM.encode(), encoding="latin-1")


def case_u_item_wrong_encoding(tmp_path):
    _u_item(tmp_path, b"1|Toy Story|x\n2|Caf\xe9 (1990)|x\n")  # latin-1 read as UTF-8


def case_u_item_id_not_integer(tmp_path):
    _u_item(tmp_path, b"1|A|x\nabc|B|x\n", encoding="latin-1")


def case_u_item_empty_title(tmp_path):
    _u_item(tmp_path, b"1|A|x\n2| |x\n", encoding="latin-1")


def case_padding_is_an_item(tmp_path):
    """u.item read without the id offset: ids 1..30, and 30 is the padding id."""
    _u_item(tmp_path, U_ITEM.encode(), encoding="latin-1", id_offset=0)


def case_catalog_unknown_key(tmp_path):
    _u_item(tmp_path, U_ITEM.encode(), sep="|")


def case_catalog_unknown_format(tmp_path):
    _u_item(tmp_path, U_ITEM.encode(), format="csv")


def case_catalog_unknown_encoding(tmp_path):
    _u_item(tmp_path, U_ITEM.encode(), encoding="latin-9000")


def case_unknown_domain(tmp_path):
    from recpo.data.prompts import domain_templates

    domain_templates("movie")


def case_template_without_slot(tmp_path):
    from recpo.data.prompts import domain_templates

    domain_templates(
        {
            "name": "movie",
            "templates": [
                "Seen {history}; pick from {candidates}. Answer:",
                "Seen {history}. Answer:",
            ],
        }
    )


def case_template_unknown_slot(tmp_path):
    from recpo.data.prompts import domain_templates

    domain_templates({"name": "movie", "templates": ["{history} {candidates} {user}. Answer:"]})


def case_unknown_candidate_protocol(tmp_path):
    from recpo.data.candidates import attach_candidates

    catalog = ItemCatalog({i: f"I{i}" for i in range(30)}, 30)
    attach_candidates([Example((1, 2, 3), 4)], catalog, protocol="fixed")


def case_augment_all_val_users(tmp_path):
    load_source(
        read_llara, "toy", folder=str(write_llara(tmp_path / "d")), augment_train_from_val=1.0
    )


# (case, text that must appear in the message: file, row, what was expected)
CASES = [
    (case_missing_file, ["Val_data", "file not found", "expected"]),
    (case_missing_id2name, ["id2name.txt", "file not found"]),
    (case_missing_column, ["train_data.parquet", "missing column", "len_seq"]),
    (case_unknown_history_item, ["train_data.parquet", "row 1", "unknown item id", "99"]),
    (case_unknown_target, ["train_data.parquet", "row 1", "unknown target", "77"]),
    (case_bad_len_seq, ["train_data.parquet", "row 1", "len_seq=5"]),
    (case_non_utf8_title, ["id2name.txt", "row 1", "UTF-8"]),
    (case_bad_id2name_line, ["id2name.txt", "row 1", "expected 'id::name'"]),
    (case_empty_history_json, ["x-train.json", "row 0", "empty history"]),
    (case_missing_json_key, ["x-train.json", "row 0", "trueSelection"]),
    (case_unknown_json_name, ["x-train.json", "row 0", "unknown candidate", "Zed"]),
    (case_json_row_not_an_object, ["x-train.json", "row 0", "expected an object", "list"]),
    (case_json_item_list_not_titles, ["x-train.json", "row 0", "column 'itemList'", "titles"]),
    (case_json_history_not_titles, ["x-train.json", "row 0", "column 'historyList'", "int 12"]),
    (case_json_selection_not_a_title, ["row 0", "column 'trueSelection'", "a title", "list"]),
    (case_target_absent_from_candidates, ["train.json", "row 3", "absent from its candidates"]),
    (case_duplicate_candidates, ["train.json", "row 3", "duplicate candidates [7]"]),
    (case_too_few_candidates, ["train.json", "row 3", "3 candidates, expected at least 16"]),
    (case_unknown_candidate, ["train.json", "row 3", "unknown candidate item ids [123]"]),
    (case_raw_unknown_item, ["interactions.csv", "row 1", "unknown item 'zz'"]),
    (case_no_data_dir, ["paths.data_dir", "RECPO_DATA_DIR"]),
    (case_seq_not_a_list, ["train_data.df", "row 1", "column 'seq'", "expected a list", "'1 2 3'"]),
    (case_seq_entry_not_integer, ["train_data.df", "row 1", "column 'seq'", "entry 1", "2.5"]),
    (case_seq_entry_missing, ["row 1", "column 'seq'", "entry 1", "missing value (None)"]),
    (case_seq_mixes_ids_and_pairs, ["row 1", "column 'seq'", "entry 2", "mixes"]),
    (case_pair_too_short, ["row 1", "column 'seq'", "entry 0", "(item, rating) pair"]),
    (case_pair_item_not_integer, ["row 1", "column 'seq'", "entry 0", "integer item id", "'a'"]),
    (case_next_is_text, ["train_data.df", "row 1", "column 'next'", "item id", "str '4'"]),
    (case_next_missing, ["train_data.df", "row 1", "column 'next'", "missing value"]),
    (case_next_empty_pair, ["train_data.df", "row 1", "column 'next'", "0 value(s)"]),
    (case_len_seq_not_integer, ["row 1", "column 'len_seq'", "non-negative integer", "2.5"]),
    (case_len_seq_negative, ["row 1", "column 'len_seq'", "non-negative integer", "-1"]),
    (case_u_item_too_few_fields, ["u.item", "row 1", "at least 2 fields separated by '|'"]),
    (case_u_item_wrong_encoding, ["u.item", "row 1", "not valid UTF-8", "catalog.encoding"]),
    (case_u_item_id_not_integer, ["u.item", "row 1", "item id 'abc' is not an integer"]),
    (case_u_item_empty_title, ["u.item", "row 1", "empty title"]),
    (case_padding_is_an_item, ["u.item", "padding id 30 is also an item id", "id_offset"]),
    (case_catalog_unknown_key, ["data.source.catalog", "'sep'", "separator"]),
    (case_catalog_unknown_format, ["data.source.catalog.format", "id2name or delimited", "csv"]),
    (case_catalog_unknown_encoding, ["data.source.catalog.encoding", "latin-9000"]),
    (case_unknown_domain, ["unknown prompt domain 'movie'", "'book', 'game', 'item', 'music'"]),
    (case_template_without_slot, ["data.domain.templates[1]", "missing ['candidates']"]),
    (case_template_unknown_slot, ["data.domain.templates[0]", "unknown ['user']"]),
    (case_unknown_candidate_protocol, ["data.candidates", "published", "independent", "fixed"]),
    (case_augment_all_val_users, ["data.source.augment_train_from_val", "[0, 1)", "1.0"]),
]


@pytest.mark.parametrize("case,expected", CASES, ids=[c.__name__ for c, _ in CASES])
def test_bad_input_gives_clear_error(tmp_path, monkeypatch, case, expected):
    monkeypatch.delenv("RECPO_DATA_DIR", raising=False)
    with pytest.raises(DataError) as err:
        case(tmp_path)
    message = str(err.value)
    for text in expected:
        assert text in message, f"{text!r} missing from: {message}"


def test_datamodule_rejects_too_few_candidates_for_k(tmp_path):
    """K+1 candidates are needed per training row: 20 candidates cannot serve K=20."""
    from recpo.data.datamodule import RecDataModule
    from recpo.data.synthetic import read_synthetic

    with pytest.raises(ValueError, match="num_negatives must be in 1..19"):
        RecDataModule(source={"reader": read_synthetic, "name": "s"}, num_negatives=20)


def test_cli_prints_one_line_for_bad_data(tmp_path):
    """The entry point reports a DataError as one line and exit code 2, not a traceback."""
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recpo.train",
            "data=lastfm",
            f"paths.data_dir={tmp_path}/nowhere",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "data error" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
