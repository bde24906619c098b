"""User-facing errors: one clear message, exit code 2, no traceback (unless --debug)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RankscopeError(Exception):
    """An error the user can fix; its message is shown as is."""

    exit_code = 2


class ConfigError(RankscopeError):
    """A bad config: names the file/field/line and what would be valid."""


class DataError(RankscopeError):
    """A bad data file or row: names the file and line."""


class RunFailed(RankscopeError):
    """One or more runs of a sweep failed (the others completed)."""

    exit_code = 1


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest option, or '' if none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
