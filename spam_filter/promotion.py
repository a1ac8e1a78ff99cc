"""Whether a newly trained model replaces the active one, and why."""

from dataclasses import dataclass

from spam_filter.scoring import Score


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote, and the reason recorded with the model either way."""

    promote: bool
    reason: str


@dataclass(frozen=True)
class ModelScore:
    """The value of the `model_score` asset: both models on the same test messages, and the
    decision taken from that."""

    challenger: Score
    active: Score | None
    active_path: str | None
    max_false_positive_rate: float
    decision: PromotionDecision

    @property
    def under_ceiling(self) -> bool:
        return self.challenger.false_positive_rate <= self.max_false_positive_rate


def decide_promotion(
    challenger: Score,
    active: Score | None,
    max_false_positive_rate: float,
    active_problem: str | None = None,
) -> PromotionDecision:
    """Promote a model under the false-positive ceiling that is at least as good as the active one.

    At least as good means it catches at least as much spam and flags at most as many legitimate
    messages on the same test messages. With no active model, or an active model that cannot be
    read (`active_problem`), a model under the ceiling is promoted without a comparison.
    """
    if challenger.false_positive_rate > max_false_positive_rate:
        return PromotionDecision(
            False,
            f"false-positive rate {challenger.false_positive_rate:.4f} is over the ceiling "
            f"{max_false_positive_rate:.4f}",
        )
    if active_problem is not None:
        return PromotionDecision(True, active_problem + "; promoting without a comparison")
    if active is None:
        return PromotionDecision(True, "no active model to compare with")
    summary = (
        f"true-positive rate {challenger.true_positive_rate:.4f} "
        f"vs {active.true_positive_rate:.4f}, "
        f"false-positive rate {challenger.false_positive_rate:.4f} vs "
        f"{active.false_positive_rate:.4f} on the same test messages"
    )
    if (
        challenger.true_positive_rate >= active.true_positive_rate
        and challenger.false_positive_rate <= active.false_positive_rate
    ):
        return PromotionDecision(True, "at least as good as the active model: " + summary)
    return PromotionDecision(False, "worse than the active model: " + summary)
