"""User-facing errors: one clear message, exit code 2, no traceback (unless --debug)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class RankscopeError(Exception):
    """An error the user can fix; its message is shown as is."""

    exit_code = 2


class ConfigError(RankscopeError):
    """A bad config: names the file/field/line and what would be valid."""


class DataError(RankscopeError):
    """A bad data file or row: names the file and line."""


class SweepBusy(RankscopeError):
    """Another driver holds the output directory (its LOCK file): two drivers would run the
    same runs at once, their workers writing the same run directories."""


class RunFailed(RankscopeError):
    """One or more runs of a sweep failed (the others completed)."""

    exit_code = 1


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest option, or '' if none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless `ok`. Each config section checks its own fields in
    `__post_init__`, one rule a line, right below the fields it checks."""
    if not ok:
        raise ConfigError(message)


def require_one_of(
    where: str, value: str | None, options: Sequence[str | None], hint: bool
) -> None:
    """`where: 'x' is not one of a, b (did you mean 'a'?)` unless `value` is an option; `hint`
    adds the closest option (some fields have always been refused without one)."""
    if value in options:
        return
    shown = ", ".join("null" if o is None else o for o in options)
    close = did_you_mean(value, [o for o in options if o is not None]) if hint and value else ""
    raise ConfigError(f"{where}: {value!r} is not one of {shown}{close}")


def require_fractions(where: str, value: float | list[float]) -> list[float]:
    """A fraction in [0, 1) or a list of them (an axis of the grid), as a list: refused
    unless every one is in [0, 1) and none is listed twice."""
    values = [float(x) for x in (value if isinstance(value, list) else [value])]
    require(len(values) > 0, f"{where}: give at least one fraction")
    for x in values:
        require(0 <= x < 1, f"{where}: must be in [0, 1), got {x:g}")
    require(len(set(values)) == len(values), f"{where}: a fraction is listed twice")
    return values
