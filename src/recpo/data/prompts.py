"""Prompt templates: history + candidate titles -> "Answer:", one domain per dataset.

Each domain has several paraphrases; each example gets one, drawn from a seeded
generator, so the same seed always gives the same prompts.
"""

from __future__ import annotations

import numpy as np

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


def domain_templates(domain: str) -> list[str]:
    if domain not in TEMPLATES:
        raise KeyError(f"unknown prompt domain {domain!r}; expected one of {sorted(TEMPLATES)}")
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
