"""Prompt templates: history + candidate titles -> "Answer:", one domain per dataset.

Each domain has several paraphrases; each example gets one, drawn from a seeded
generator, so the same seed always gives the same prompts. The built-in domains
are below; a data config defines another by giving its templates::

    domain:
      name: movie
      templates:
        - "This user has watched {history} ... candidates: {candidates}. ... Answer:"
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recpo.errors import DataError

# {history} and {candidates} are filled with titles joined by ", ".
TEMPLATES: dict[str, list[str]] = {
    "music": [
        "This user has listened to {history} in the past. Given this listening history, "
        "recommend the next artist from the candidates: {candidates}. Choose exactly one "
        "of the candidates. Answer:",
        "A listener recently played {history}. Which artist from the following candidates "
        "will they listen to next: {candidates}? Pick one candidate only. Answer:",
        "Listening history of a user: {history}. Candidate artists: {candidates}. Predict "
        "the single candidate this user will listen to next. Answer:",
    ],
    "book": [
        "This user has read {history} in the past. Given this reading history, recommend "
        "the next book from the candidates: {candidates}. Choose exactly one of the "
        "candidates. Answer:",
        "A reader recently finished {history}. Which book from the following candidates "
        "will they read next: {candidates}? Pick one candidate only. Answer:",
        "Reading history of a user: {history}. Candidate books: {candidates}. Predict the "
        "single candidate this user will read next. Answer:",
    ],
    "game": [
        "This user has played {history} in the past. Given this gaming history, recommend "
        "the next game from the candidates: {candidates}. Choose exactly one of the "
        "candidates. Answer:",
        "A player recently played {history}. Which game from the following candidates will "
        "they play next: {candidates}? Pick one candidate only. Answer:",
        "Gaming history of a user: {history}. Candidate games: {candidates}. Predict the "
        "single candidate this user will play next. Answer:",
    ],
    "item": [
        "This user has interacted with {history} in the past. Given this history, recommend "
        "the next item from the candidates: {candidates}. Choose exactly one of the "
        "candidates. Answer:",
        "A user recently chose {history}. Which item from the following candidates will "
        "they choose next: {candidates}? Pick one candidate only. Answer:",
        "History of a user: {history}. Candidate items: {candidates}. Predict the single "
        "candidate this user will choose next. Answer:",
    ],
}

SEPARATOR = ", "


# Every template ends with this word; answers are tokenised as its continuation
# (recpo.data.batches.Collator.answer_ids).
ANSWER_SUFFIX = "Answer:"
SLOTS = ("history", "candidates")


def check_template(template: Any, where: str) -> str:
    """A template must be text with the slots {history} and {candidates} (and no
    other), ending with "Answer:" (answers are scored as its continuation)."""
    if not isinstance(template, str):
        raise DataError(f"{where}: expected a template string, got {type(template).__name__}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise DataError(f"{where}: not a valid template ({err}): {template!r}") from None
    missing = [s for s in SLOTS if s not in fields]
    other = sorted(set(fields) - set(SLOTS))
    if missing or other:
        raise DataError(
            f"{where}: a template needs the slots {{history}} and {{candidates}} and no others "
            f"(missing {missing}, unknown {other}; write literal braces as {{{{ }}}}): "
            f"{template!r}"
        )
    if not template.rstrip().endswith(ANSWER_SUFFIX):
        raise DataError(f"{where}: a template must end with {ANSWER_SUFFIX!r}: {template!r}")
    return template.rstrip()


def domain_templates(domain: str | Mapping) -> list[str]:
    """The templates of a prompt domain (``data.domain``).

    Args:
        domain: A built-in domain name, or a mapping ``{name, templates}`` that
            defines a domain (``templates`` may be left out for a built-in name).
    """
    if isinstance(domain, Mapping):
        name = domain.get("name")
        templates = domain.get("templates")
        unknown = sorted(set(domain) - {"name", "templates"})
        if unknown:
            raise DataError(f"data.domain: unknown key(s) {unknown}; expected name and templates")
        if templates is None:
            domain = name
        else:
            if isinstance(templates, str) or not isinstance(templates, Sequence) or not templates:
                raise DataError("data.domain.templates must be a non-empty list of templates")
            return [
                check_template(t, f"data.domain.templates[{i}]") for i, t in enumerate(templates)
            ]
    if domain not in TEMPLATES:
        raise DataError(
            f"unknown prompt domain {domain!r}; built-in domains are {sorted(TEMPLATES)}. "
            "To define one, give its templates: data.domain={name: NAME, templates: [...]} "
            "(see conf/data/movielens.yaml)"
        )
    return TEMPLATES[domain]


def draw_templates(num_examples: int, num_templates: int, seed: int) -> np.ndarray:
    """Template index per example, fixed by ``seed``."""
    return np.random.default_rng([seed, 7919]).integers(0, num_templates, size=num_examples)


def build_prompt(template: str, history: list[str], candidates: list[str]) -> str:
    """Fill a template with history and candidate titles."""
    return template.format(history=SEPARATOR.join(history), candidates=SEPARATOR.join(candidates))


def answer_text(title: str) -> str:
    """The answer that follows "Answer:" (the end token is appended at tokenisation)."""
    return " " + title
