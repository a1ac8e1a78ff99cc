"""The promotion rule: under the ceiling, and at least as good as the active model."""

import pytest

from spam_filter.promotion import decide_promotion
from spam_filter.scoring import Score

CEILING = 0.05


@pytest.mark.parametrize(
    ("challenger", "active", "promoted"),
    [
        (Score(90, 1, 99, 10), None, True),  # first model
        (Score(95, 1, 99, 5), Score(90, 2, 98, 10), True),  # better on both rates
        (Score(90, 1, 99, 10), Score(90, 1, 99, 10), True),  # equal
        (Score(85, 1, 99, 15), Score(90, 1, 99, 10), False),  # catches less spam
        (Score(95, 3, 97, 5), Score(90, 1, 99, 10), False),  # flags more legitimate messages
        (Score(99, 6, 94, 1), None, False),  # over the ceiling, even as the first model
    ],
)
def test_promotion_rule(challenger, active, promoted):
    decision = decide_promotion(challenger, active, CEILING)
    assert decision.promote is promoted
    assert decision.reason


def test_an_unreadable_active_model_is_replaced_without_a_comparison():
    decision = decide_promotion(Score(90, 1, 99, 10), None, CEILING, "active model x is corrupt")
    assert decision.promote
    assert decision.reason == "active model x is corrupt; promoting without a comparison"


def test_the_ceiling_holds_even_when_the_active_model_is_unreadable():
    decision = decide_promotion(Score(90, 9, 91, 10), None, CEILING, "active model x is corrupt")
    assert not decision.promote
    assert "over the ceiling" in decision.reason
