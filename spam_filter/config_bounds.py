"""The ranges the launchpad's config fields must lie in.

A value outside them (NaN and infinities included) fails the step before it does any work, with
the field's name and its range: otherwise a negative budget surfaced as a DuckDB binder error,
a zero false-positive cost as "math domain error", and a NaN margin flagged every honest reporter.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

# Seeds go into SQL as 32-bit integers.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Bound:
    """A closed range by default; `low_open`/`high_open` leave out that end."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        try:
            if not math.isfinite(value):
                return False
        except OverflowError:  # an integer too large for a float
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        if self.high == math.inf:
            return f"{'above' if self.low_open else 'at least'} {_number(self.low)}"
        opening = "(" if self.low_open else "["
        closing = ")" if self.high_open else "]"
        return f"within {opening}{_number(self.low)}, {_number(self.high)}{closing}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


SHARE = Bound(0, 1)
COUNT = Bound(0)
SEED = Bound(INT32_MIN, INT32_MAX)


def check_config(config: dg.Config, bounds: Mapping[str, Bound]) -> None:
    """Fail the step, naming every field of `config` outside its bound."""
    problems = [
        f"{name} must be {bound.describe()}, not {getattr(config, name)!r}"
        for name, bound in bounds.items()
        if not bound.admits(getattr(config, name))
    ]
    if problems:
        raise dg.Failure("invalid config: " + "; ".join(problems))
