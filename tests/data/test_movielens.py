"""LLaRA's MovieLens layout: (item, rating) pairs in seq and next, titles in a latin-1
u.item with ids one higher, and a prompt domain defined in conf/data/movielens.yaml."""

from __future__ import annotations

from pathlib import Path

import hydra
import pandas as pd
import pytest
from omegaconf import OmegaConf

from recpo.data.convert import convert_folder
from recpo.data.formats.catalog import CatalogFormat, clean_name, read_catalog
from recpo.data.formats.llara import read_llara
from recpo.data.sources import load_source
from tests.conftest import compose

NUM_ITEMS = 30  # u.item ids 1..30, table ids 0..29, padding (30, 0)
TITLES = {
    1: "Toy Story (1995)",
    2: "Cité des enfants perdus, La (1995)",  # non-ASCII, stored as latin-1
    3: "Godfather, The (1972)",
}
U_ITEM = CatalogFormat(
    file="u.item", format="delimited", separator="|", encoding="latin-1", id_offset=-1
)

# (history pairs, next pair); histories shorter than 10 are padded with (30, 0).
ROWS = [
    ([(0, 5), (1, 4), (2, 3)], (3, 4)),
    ([(4, 1), (5, 2), (6, 3), (7, 4)], (1, 5)),
    ([(8, 5), (9, 4)], (2, 3)),  # 2 history items: dropped (min_history 3)
    ([(i, 3) for i in range(10, 20)], (2, 1)),
]


def write_movielens(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(1, NUM_ITEMS + 1):
        title = TITLES.get(i, f"Movie {i} (1990)")
        lines.append(f"{i}|{title}|01-Jan-1995||http://example.org/{i}|0|1|0\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    records = []
    for hist, nxt in ROWS:
        seq = hist + [(NUM_ITEMS, 0)] * (10 - len(hist))
        records.append({"seq": seq, "len_seq": len(hist), "next": nxt})
    for stem in ("train_data", "Val_data", "Test_data"):
        pd.DataFrame(records).to_pickle(folder / f"{stem}.df")
    return folder


def test_u_item_catalog_latin1_offset_and_titles(tmp_path):
    folder = write_movielens(tmp_path / "movielens")
    catalog = read_catalog(path=folder / "u.item", fmt=U_ITEM)
    assert len(catalog) == NUM_ITEMS and catalog.padding_id == NUM_ITEMS
    assert catalog.item_ids == list(range(NUM_ITEMS))  # ids shifted by -1, file order
    assert catalog.name(0) == "Toy Story (1995)"
    assert catalog.name(1) == "Cité des enfants perdus, La (1995)"
    clean = {"leading_article": True}
    assert (
        read_catalog(path=folder / "u.item", fmt=U_ITEM, clean=clean).name(2)
        == "The Godfather (1972)"
    )
    stripped = read_catalog(path=folder / "u.item", fmt=U_ITEM, clean={"strip_parenthetical": True})
    assert stripped.name(1) == "Cité des enfants perdus, La"


def test_clean_name_leading_article():
    assert clean_name("Godfather, The (1972)", leading_article=True) == "The Godfather (1972)"
    assert clean_name("Goofy Movie, A", leading_article=True) == "A Goofy Movie"
    assert clean_name("Rock, The (1996)", leading_article=True, strip_parenthetical=True) == (
        "The Rock"
    )
    assert clean_name("Theory, Then (2000)", leading_article=True) == "Theory, Then (2000)"


@pytest.mark.parametrize("fmt", ["pickle", "parquet", "jsonl"])
def test_pair_sequences_read_as_items(tmp_path, fmt):
    folder = write_movielens(tmp_path / "movielens")
    if fmt != "pickle":
        for stem in ("train_data", "Val_data", "Test_data"):
            df = pd.read_pickle(folder / f"{stem}.df")
            df["seq"] = df["seq"].map(lambda s: [list(p) for p in s])
            df["next"] = df["next"].map(list)
            (folder / f"{stem}.df").unlink()
            if fmt == "parquet":
                df.to_parquet(folder / f"{stem}.parquet")
            else:
                df.to_json(folder / f"{stem}.jsonl", orient="records", lines=True)
    ds = read_llara(directory=folder, name="movielens", allow_pickle=True, catalog=U_ITEM)
    expected = [(tuple(i for i, _ in hist), nxt[0]) for hist, nxt in ROWS if len(hist) >= 3]
    for split in ("train", "val", "test"):
        assert [(e.history, e.target) for e in ds.split(split)] == expected
        assert [e.row for e in ds.split(split)] == [0, 1, 3]


def test_converter_keeps_pairs_and_copies_u_item(tmp_path):
    folder = write_movielens(tmp_path / "movielens")
    before = read_llara(directory=folder, name="movielens", allow_pickle=True, catalog=U_ITEM)
    convert_folder(folder, tmp_path / "out")
    assert (tmp_path / "out" / "u.item").read_bytes() == (folder / "u.item").read_bytes()
    table = pd.read_parquet(tmp_path / "out" / "train_data.parquet")
    assert [list(p) for p in table["seq"][0]][:3] == [[0, 5], [1, 4], [2, 3]]
    after = read_llara(directory=tmp_path / "out", name="movielens", catalog=U_ITEM)
    assert after.train == before.train and after.catalog.names == before.catalog.names


def test_movielens_config_reads_and_prompts_movies(tmp_path):
    """conf/data/movielens.yaml reads the layout and renders prompts of its own domain."""
    write_movielens(tmp_path / "data" / "movielens")
    cfg = compose(["data=movielens", f"paths.data_dir={tmp_path / 'data'}"], tmp_path)
    ds = load_source(**OmegaConf.to_container(cfg.data.source, resolve=True))
    assert ds.catalog.name(2) == "The Godfather (1972)" and ds.catalog.padding_id == 30
    assert [(e.history, e.target) for e in ds.test] == [
        ((0, 1, 2), 3),
        ((4, 5, 6, 7), 1),
        (tuple(range(10, 20)), 2),
    ]
    dm = hydra.utils.instantiate(cfg.data)
    dm.load()
    templates = list(cfg.data.domain.templates)
    assert dm.templates == templates and len(templates) == 3
    item = dm.dataset_for("test", "eval")[1]
    assert item.target == "Cité des enfants perdus, La (1995)"
    assert "watch" in item.prompt and item.target in item.prompt
    assert item.prompt.endswith("Answer:")
