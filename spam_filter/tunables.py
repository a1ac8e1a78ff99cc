"""The base of the launchpad's config classes, and how resources describe their fields.

Each field's docstring is its description in the launchpad, and its range is a pydantic
constraint, checked when a step starts, before it does any work: the step then fails naming every
field out of range. NaN and infinities are refused too. Without the ranges, a negative budget
surfaced as a DuckDB binder error, a zero false-positive cost as "math domain error", and a NaN
margin flagged every honest reporter.
"""

import dagster as dg
from pydantic import ConfigDict

# Seeds go into SQL as 32-bit integers.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


# For a resource's `model_config`: its field docstrings are their descriptions in the UI.
DESCRIBED_BY_DOCSTRINGS = ConfigDict(use_attribute_docstrings=True)


class Tunables(dg.Config):
    """Config whose field docstrings show in the launchpad and whose numbers are finite."""

    model_config = ConfigDict(**DESCRIBED_BY_DOCSTRINGS, allow_inf_nan=False)
