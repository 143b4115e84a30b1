"""A synthetic sequential-recommendation dataset with learnable structure.

Items have generated titles, a latent genre and a popularity. Each user has a
favourite set of genres and walks between genres with a shared Markov chain that
mostly stays in the current genre or moves to its "neighbour" genre; within a genre
the next item follows item popularity, never repeating an item the user already
chose. A model that learns the genre of each item and the transition structure
beats random ranking of 20 candidates (HitRatio@1 = 0.05) by a wide margin.

The generator writes the raw format (``interactions.csv``, ``items.csv``) so the
demo goes through the same reader as users' own data (:func:`read_synthetic`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recpo.data.formats.raw import read_raw
from recpo.data.records import RecDataset
from recpo.errors import DataError

_ONSETS = [
    "b",
    "br",
    "c",
    "ch",
    "d",
    "dr",
    "f",
    "g",
    "gl",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "sh",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "x", "nd", "rk", "m"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and structure of the synthetic dataset."""

    num_items: int = 400
    num_genres: int = 8
    num_users: int = 700
    min_length: int = 8
    max_length: int = 20
    stay_prob: float = 0.6
    next_genre_prob: float = 0.3
    popularity_exponent: float = 1.0
    seed: int = 0


def _word(rng: np.random.Generator, syllables: int) -> str:
    parts = [
        _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
        for _ in range(syllables)
    ]
    return ("".join(parts) + _CODAS[rng.integers(len(_CODAS))]).capitalize()


def _titles(rng: np.random.Generator, n: int) -> list[str]:
    titles: list[str] = []
    seen: set[str] = set()
    while len(titles) < n:
        words = int(rng.integers(1, 3))
        title = " ".join(_word(rng, int(rng.integers(1, 4))) for _ in range(words))
        if title in seen or len(title) < 4:
            continue
        seen.add(title)
        titles.append(title)
    return titles


def generate(cfg: SyntheticConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate ``(interactions, items)`` tables in the raw format."""
    rng = np.random.default_rng(cfg.seed)
    titles = _titles(rng, cfg.num_items)
    genre = rng.integers(0, cfg.num_genres, size=cfg.num_items)
    # Zipf-like popularity inside each genre.
    weight = np.zeros(cfg.num_items)
    for g in range(cfg.num_genres):
        members = np.flatnonzero(genre == g)
        ranks = rng.permutation(len(members)) + 1
        weight[members] = 1.0 / ranks**cfg.popularity_exponent
    rows = []
    for user in range(cfg.num_users):
        taste = rng.dirichlet(np.full(cfg.num_genres, 0.3))
        length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
        g = int(rng.choice(cfg.num_genres, p=taste))
        used = np.zeros(cfg.num_items, dtype=bool)
        for t in range(length):
            if t > 0:
                u = rng.random()
                if u < cfg.stay_prob:
                    pass
                elif u < cfg.stay_prob + cfg.next_genre_prob:
                    g = (g + 1) % cfg.num_genres
                else:
                    g = int(rng.choice(cfg.num_genres, p=taste))
            p = np.where((genre == g) & ~used, weight, 0.0)
            if p.sum() == 0:
                p = np.where(~used, weight, 0.0)
            item = int(rng.choice(cfg.num_items, p=p / p.sum()))
            used[item] = True
            rows.append((f"u{user}", f"i{item}", t))
    interactions = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    items = pd.DataFrame({"item": [f"i{i}" for i in range(cfg.num_items)], "title": titles})
    return interactions, items


def write_synthetic(cfg: SyntheticConfig, cache_dir: str | Path) -> Path:
    """Generate the dataset into a folder keyed by its config (reused when present)."""
    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    out = Path(cache_dir) / "synthetic" / key
    if (out / "items.csv").is_file() and (out / "interactions.csv").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    interactions, items = generate(cfg)
    for name, df in (("items", items), ("interactions", interactions)):
        tmp = out / f"{name}.csv.tmp"
        df.to_csv(tmp, index=False)
        tmp.replace(out / f"{name}.csv")
    return out


def read_synthetic(
    *,
    cache_dir: str | Path | None,
    name: str,
    synthetic: dict | None = None,
    max_history: int = 10,
    min_history: int = 3,
    split_seed: int = 0,
    clean: dict | None = None,
) -> RecDataset:
    """The reader of ``data=synthetic``: generate the dataset into ``cache_dir`` (once per
    ``synthetic``, the :class:`SyntheticConfig` fields) and read it as raw interactions
    (:func:`~recpo.data.formats.raw.read_raw`, with the other arguments)."""
    if cache_dir is None:
        raise DataError("the synthetic dataset needs paths.cache_dir")
    directory = write_synthetic(SyntheticConfig(**(synthetic or {})), cache_dir)
    return read_raw(
        directory=directory,
        name=name,
        max_history=max_history,
        min_history=min_history,
        split_seed=split_seed,
        clean=clean,
    )
