"""How the grid is searched: `search` (grid | halving) and the `halving:` section.

`search: halving` runs successive halving over the grid's arms (`rankscope.halving`); the
grid itself, every run's id and config hash are the same as with `search: grid`, so neither
key is part of any run's identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from rankscope.errors import require

SEARCHES = ("grid", "halving")
"""The values `search` may take."""


@dataclass
class HalvingConfig:
    eta: int = 3
    """Reduction factor: after each rung the best 1/eta of a train task's arms (at least one)
    on the validation split go on to the next rung."""
    min_fraction: float | None = None
    """Budget fraction of the first rung; rungs at min_fraction x eta^k, then the full budget.
    null = 1/eta^s, s = floor(log_eta(arms per train task)) (classic successive halving)."""

    def __post_init__(self) -> None:
        eta = self.eta
        require(
            isinstance(eta, int) and not isinstance(eta, bool) and eta >= 2,
            f"halving.eta: must be an integer >= 2, got {eta!r}",
        )
        f = self.min_fraction
        require(
            f is None or 0 < f < 1,
            f"halving.min_fraction: must be in (0, 1) or null, got {f!r}",
        )

    def rungs(self, arms: int) -> list[float]:
        """The budget fractions of the rungs for `arms` competing arms, ascending, the last 1."""
        first = self.min_fraction
        if first is None:
            s, n = 0, arms
            while n >= self.eta:  # floor(log_eta(arms)) without float rounding
                n //= self.eta
                s += 1
            first = 1.0 / self.eta**s
        out = []
        while first < 1 - 1e-9:
            out.append(first)
            first *= self.eta
        return [*out, 1.0]
