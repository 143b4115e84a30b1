"""Plain containers shared by the readers, the prompt builder and the baselines."""

from __future__ import annotations

from dataclasses import dataclass, field

# The splits of every dataset, in order.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One next-item prediction: a chronological history and the item that followed.

    Attributes:
        history: Item ids the user interacted with, oldest first (no padding).
        target: The item id that came next.
        candidates: The candidate list shown in the prompt (target included, in
            display order), or ``None`` until candidates are built.
        row: Row of the source file, used in error messages.
    """

    history: tuple[int, ...]
    target: int
    candidates: tuple[int, ...] | None = None
    row: int = -1


@dataclass
class ItemCatalog:
    """Item ids and their display names.

    Attributes:
        names: Display name of each item id, in the source file's order (the
            order matters: candidate sampling enumerates items in this order).
        padding_id: The id used to pad histories in the LLaRA format.
    """

    names: dict[int, str]
    padding_id: int
    _by_name: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {name: item for item, name in self.names.items()}

    @property
    def item_ids(self) -> list[int]:
        return list(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, item: int) -> bool:
        return item in self.names

    def name(self, item: int) -> str:
        return self.names[item]

    def id_of(self, name: str) -> int | None:
        return self._by_name.get(name)


@dataclass
class RecDataset:
    """A dataset split into train, val and test examples over one item catalog."""

    name: str
    catalog: ItemCatalog
    train: list[Example]
    val: list[Example]
    test: list[Example]
    # Row counts of each split by where the rows came from, e.g.
    # {"train": {"train_sample_1000": 1000, "val history prefixes": 4100}, ...}.
    origins: dict[str, dict[str, int]] = field(default_factory=dict)

    def split(self, name: str) -> list[Example]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of train, val, test")
        return getattr(self, name)

    def describe_origins(self) -> str:
        """One line: the rows of each split and where they came from."""
        parts = []
        for split in SPLITS:
            rows = self.split(split)
            origins = self.origins.get(split) or {split: len(rows)}
            detail = " + ".join(f"{n:,} {origin}" for origin, n in origins.items())
            parts.append(f"{split} {len(rows):,} rows ({detail})")
        return f"{self.name}: " + "; ".join(parts)
