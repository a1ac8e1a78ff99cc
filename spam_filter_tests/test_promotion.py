"""The promotion rule: under the ceiling, within tolerance on gold, and better somewhere."""

import pytest

from spam_filter.promotion import PromotionRule, cost_per_message, decide_promotion
from spam_filter.scoring import Score, SplitScores

RULE = PromotionRule(max_false_positive_rate=0.05)
NO_USERS = Score(0, 0, 0, 0)


def _scores(gold: Score, user: Score = NO_USERS) -> SplitScores:
    return SplitScores(gold=gold, user=user, synthetic=NO_USERS)


@pytest.mark.parametrize(
    ("challenger", "active", "promoted", "fragment"),
    [
        (_scores(Score(90, 1, 99, 10)), None, True, "no active model"),
        (_scores(Score(95, 1, 99, 5)), _scores(Score(90, 2, 98, 10)), True, "better on gold"),
        # The same scores everywhere: better nowhere, as a retrain on unchanged data.
        (_scores(Score(90, 1, 99, 10)), _scores(Score(90, 1, 99, 10)), False, "better nowhere"),
        (_scores(Score(85, 1, 99, 15)), _scores(Score(90, 1, 99, 10)), False, "too little gold"),
        (_scores(Score(95, 3, 997, 5)), _scores(Score(90, 1, 999, 10)), False, "too many gold"),
        (_scores(Score(99, 6, 94, 1)), None, False, "over the ceiling"),
        # Even the first model must catch most gold spam, and a split with none cannot show it.
        (_scores(Score(40, 0, 100, 60)), None, False, "under the floor"),
        (_scores(Score(0, 0, 100, 0)), None, False, "no gold spam"),
        # Equal on gold, and catching more of what users report: promoted.
        (
            _scores(Score(90, 1, 99, 10), Score(40, 0, 50, 10)),
            _scores(Score(90, 1, 99, 10), Score(30, 0, 50, 20)),
            True,
            "better on user reports",
        ),
        # Better on user reports, but past the tolerance on gold: the gold set guards.
        (
            _scores(Score(80, 1, 99, 20), Score(50, 0, 50, 0)),
            _scores(Score(90, 1, 99, 10), Score(30, 0, 50, 20)),
            False,
            "too little gold",
        ),
        # Exactly at the false-positive tolerance (0.1 point: 5 of 3,000 against 2 of 3,000),
        # which a float sum of the two rates put past it.
        (
            _scores(Score(90, 5, 2995, 10), Score(50, 0, 50, 0)),
            _scores(Score(90, 2, 2998, 10), Score(30, 0, 50, 20)),
            True,
            "better on user reports",
        ),
        # Slightly worse on gold, within tolerance, and better on user reports: promoted.
        (
            _scores(Score(996, 1, 999, 4), Score(50, 0, 50, 0)),
            _scores(Score(1000, 0, 1000, 0), Score(30, 0, 50, 20)),
            True,
            "better on user reports",
        ),
    ],
)
def test_promotion_rule(challenger, active, promoted, fragment):
    decision = decide_promotion(challenger, active, RULE)
    assert decision.promote is promoted
    assert fragment in decision.reason


def test_an_unreadable_active_model_is_replaced_without_a_comparison():
    decision = decide_promotion(_scores(Score(90, 1, 99, 10)), None, RULE, "active model x is bad")
    assert decision.promote
    assert decision.reason == "active model x is bad; promoting without a comparison"


def test_the_ceiling_holds_even_when_the_active_model_is_unreadable():
    decision = decide_promotion(_scores(Score(90, 9, 91, 10)), None, RULE, "active model x is bad")
    assert not decision.promote
    assert "over the ceiling" in decision.reason


def test_cost_weighs_a_false_positive_as_many_missed_spams():
    assert cost_per_message(Score(9, 1, 89, 1), 8.0) == pytest.approx((1 + 8) / 100)
    assert cost_per_message(Score(0, 0, 0, 0), 8.0) == 0.0
