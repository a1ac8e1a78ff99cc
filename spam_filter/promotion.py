"""Whether a newly trained model replaces the active one, and why.

The gold set (the SMS collection's held-out split and the product's gold.csv), which reports never
touch, guards every promotion: a new model must stay within a tolerance of the active one there.
It must also be better somewhere, on the held-out user reports or on gold; a model better
nowhere, such as one retrained on unchanged data, is not promoted. "Better" on a set means a lower
expected cost per message: missed spam, plus each legitimate message flagged weighted by the
false-positive cost.
"""

from dataclasses import dataclass

from spam_filter import constants
from spam_filter.scoring import Score, SplitScores


@dataclass(frozen=True)
class PromotionRule:
    """What a new model must achieve to replace the active one."""

    max_false_positive_rate: float
    """Gold false-positive rate that no promoted model may exceed."""
    min_true_positive_rate: float = constants.MIN_GOLD_TRUE_POSITIVE_RATE
    """Gold true-positive rate every promoted model must reach, with or without an active one."""
    gold_true_positive_tolerance: float = 0.005
    """How far below the active model's gold true-positive rate a new model may fall."""
    gold_false_positive_tolerance: float = 0.001
    """How far above the active model's gold false-positive rate a new model may rise."""
    false_positive_cost: float = 8.0
    """How many missed spams one flagged legitimate message is worth, to compare costs."""


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote, and the reason recorded with the model either way."""

    promote: bool
    reason: str


@dataclass(frozen=True)
class ModelScore:
    """The value of the `model_score` asset: both models on the same test messages, and the
    decision taken from that."""

    challenger: SplitScores
    active: SplitScores | None
    active_path: str | None
    rule: PromotionRule
    decision: PromotionDecision

    @property
    def under_ceiling(self) -> bool:
        return self.challenger.gold.false_positive_rate <= self.rule.max_false_positive_rate


def cost_per_message(score: Score, false_positive_cost: float) -> float:
    """Missed spam plus weighted flagged legitimate messages, per message of the set."""
    if not score.messages:
        return 0.0
    return (score.false_negatives + false_positive_cost * score.false_positives) / score.messages


# Far under one message in any test split, far over a float's rounding of a rate.
_ROUNDING = 1e-12


def decide_promotion(
    challenger: SplitScores,
    active: SplitScores | None,
    rule: PromotionRule,
    active_problem: str | None = None,
) -> PromotionDecision:
    """Promote a model under the ceiling that keeps gold within tolerance and is better somewhere.

    With no active model, or an active model that cannot be read (`active_problem`), a model under
    the ceiling is promoted without a comparison.
    """
    gold = challenger.gold
    if gold.false_positive_rate > rule.max_false_positive_rate:
        return PromotionDecision(
            False,
            f"gold false-positive rate {gold.false_positive_rate:.4f} is over the ceiling "
            f"{rule.max_false_positive_rate:.4f}",
        )
    if not gold.true_positives + gold.false_negatives:
        return PromotionDecision(False, "the test split holds no gold spam to judge the model by")
    if gold.true_positive_rate < rule.min_true_positive_rate:
        return PromotionDecision(
            False,
            f"gold true-positive rate {gold.true_positive_rate:.4f} is under the floor "
            f"{rule.min_true_positive_rate:.4f}: it would let most spam through",
        )
    if active_problem is not None:
        return PromotionDecision(True, active_problem + "; promoting without a comparison")
    if active is None:
        return PromotionDecision(True, "no active model to compare with")
    summary = _summary(challenger, active)
    # A rate exactly at the tolerance is within it, whatever the rounding of the two rates' sum.
    if (
        gold.true_positive_rate
        < active.gold.true_positive_rate - rule.gold_true_positive_tolerance - _ROUNDING
    ):
        return PromotionDecision(False, "catches too little gold spam: " + summary)
    if (
        gold.false_positive_rate
        > active.gold.false_positive_rate + rule.gold_false_positive_tolerance + _ROUNDING
    ):
        return PromotionDecision(False, "flags too many gold legitimate messages: " + summary)
    better = [
        name
        for name, new, old in (
            ("user reports", challenger.user, active.user),
            ("gold", challenger.gold, active.gold),
        )
        if new.messages
        and cost_per_message(new, rule.false_positive_cost)
        < cost_per_message(old, rule.false_positive_cost)
    ]
    if not better:
        return PromotionDecision(False, "better nowhere than the active model: " + summary)
    return PromotionDecision(True, f"better on {' and '.join(better)}: " + summary)


def _summary(challenger: SplitScores, active: SplitScores) -> str:
    parts = []
    for name in ("gold", "user"):
        new, old = getattr(challenger, name), getattr(active, name)
        if new.messages:
            parts.append(
                f"{name} true-positive rate {new.true_positive_rate:.4f} vs "
                f"{old.true_positive_rate:.4f}, false-positive rate "
                f"{new.false_positive_rate:.4f} vs {old.false_positive_rate:.4f}"
            )
    return "; ".join(parts) + " on the same test messages"
