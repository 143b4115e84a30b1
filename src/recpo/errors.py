"""Errors that ``python -m recpo.train`` reports as one line (exit code 2) instead of a
stack trace. Kept apart from :mod:`recpo.train`, which runs as ``__main__``: a class
defined there and imported elsewhere would be a second, different class."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work with the rest of the config."""
