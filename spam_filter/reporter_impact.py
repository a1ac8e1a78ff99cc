"""The impact check on reporters: would the model judge the gold set better without a reporter?

Naive Bayes counts are additive, so the model without one reporter is the model's counts minus
the counts of the messages that reporter alone supports, and it can be scored on the gold set in
memory for every reporter in turn. A reporter whose messages make the gold result worse by more
than a margin is left out of the run (reject on negative impact).
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from spam_filter.learning import ClassCounts
from spam_filter.spam import tokenize


@dataclass(frozen=True)
class ReporterImpact:
    """What one reporter's messages do to the gold result."""

    reporter_id: int
    messages: float
    harm: float
    """Cost of the gold errors with the reporter's messages minus without them (> 0: worse)."""
    left_out: bool


class GoldSet:
    """Gold messages as token counts over their own vocabulary, to score many models quickly."""

    def __init__(self, messages: Iterable[tuple[bool, str]]) -> None:
        labels, rows, columns, values = [], [], [], []
        vocabulary: dict[str, int] = {}
        for row, (spam, text) in enumerate(messages):
            labels.append(bool(spam))
            for word, count in Counter(tokenize(text)).items():
                rows.append(row)
                columns.append(vocabulary.setdefault(word, len(vocabulary)))
                values.append(count)
        self.words = list(vocabulary)
        self.spam = np.array(labels, dtype=bool)
        # Token counts as (message, word, count) triples: a sparse message-by-word matrix.
        self._rows = np.array(rows, dtype=np.int64)
        self._columns = np.array(columns, dtype=np.int64)
        self._counts = np.array(values, dtype=float)

    def __len__(self) -> int:
        return len(self.spam)

    def error_cost(
        self, log_odds: np.ndarray, threshold: float, false_positive_cost: float
    ) -> float:
        """Missed gold spam plus `false_positive_cost` per flagged gold legitimate message, each
        counted smoothly (a logistic of its distance to the threshold), so that a reporter who
        moves many messages towards the wrong side shows before they cross it."""
        scores = np.bincount(
            self._rows, weights=self._counts * log_odds[self._columns], minlength=len(self)
        )
        margin = np.clip(scores - threshold, -50.0, 50.0)
        flagged = 1.0 / (1.0 + np.exp(-margin))
        missed = float(np.sum(1.0 - flagged[self.spam]))
        false_alarms = float(np.sum(flagged[~self.spam]))
        return missed + false_positive_cost * false_alarms


@dataclass(frozen=True)
class _Totals:
    """Sums over a model's counts, computed once for every reporter's comparison."""

    spam: float
    ham: float
    vocabulary: int

    @classmethod
    def of(cls, counts: ClassCounts) -> "_Totals":
        return cls(
            sum(counts.spam_words.values()),
            sum(counts.ham_words.values()),
            len(set(counts.spam_words) | set(counts.ham_words)),
        )


def gold_log_odds(
    gold: GoldSet,
    counts: ClassCounts,
    totals: _Totals,
    alpha: float,
    without: ClassCounts | None = None,
) -> np.ndarray:
    """log P(word | spam) - log P(word | ham) for the gold words, under `counts` minus `without`.

    Words outside the remaining vocabulary add nothing, as in `SpamModel.score`.
    """
    without = without or ClassCounts({}, {}, 0.0, 0.0)
    spam = np.array(
        [counts.spam_words.get(w, 0.0) - without.spam_words.get(w, 0.0) for w in gold.words]
    )
    ham = np.array(
        [counts.ham_words.get(w, 0.0) - without.ham_words.get(w, 0.0) for w in gold.words]
    )
    gone = sum(
        1
        for word in set(without.spam_words) | set(without.ham_words)
        if counts.spam_words.get(word, 0.0)
        - without.spam_words.get(word, 0.0)
        + counts.ham_words.get(word, 0.0)
        - without.ham_words.get(word, 0.0)
        <= 1e-9
    )
    vocabulary = totals.vocabulary - gone
    spam_total = totals.spam - sum(without.spam_words.values())
    ham_total = totals.ham - sum(without.ham_words.values())
    log_odds = np.log((spam + alpha) / (spam_total + alpha * vocabulary)) - np.log(
        (ham + alpha) / (ham_total + alpha * vocabulary)
    )
    return np.where(spam + ham > 1e-9, log_odds, 0.0)


def reporter_impacts(
    gold: GoldSet,
    everyone: ClassCounts,
    reporters: dict[int, ClassCounts],
    alpha: float,
    threshold: float,
    false_positive_cost: float,
    margin: float,
    already_left_out: frozenset[int] = frozenset(),
) -> list[ReporterImpact]:
    """Each reporter's harm to the gold result at `threshold`; left out past `margin`.

    The most harmful reporter is left out first and the others are weighed again without it, so
    that one attacker's weight does not make honest reporters look harmful beside it. Reporters
    in `already_left_out` (by another check) are taken out before any is weighed.
    """
    left_out = set(already_left_out)
    harms: dict[int, float] = {}
    while len(gold):
        remaining = _minus(everyone, [reporters[r] for r in left_out if r in reporters])
        totals = _Totals.of(remaining)
        cost = gold.error_cost(
            gold_log_odds(gold, remaining, totals, alpha), threshold, false_positive_cost
        )
        round_harms = {
            reporter: cost
            - gold.error_cost(
                gold_log_odds(gold, remaining, totals, alpha, without=counts),
                threshold,
                false_positive_cost,
            )
            for reporter, counts in reporters.items()
            if reporter not in left_out
        }
        harms.update(round_harms)
        worst = max(round_harms, key=round_harms.get, default=None)
        if worst is None or round_harms[worst] <= margin:
            break
        left_out.add(worst)
    return [
        ReporterImpact(
            reporter,
            counts.spam_messages + counts.ham_messages,
            harms.get(reporter, 0.0),
            reporter in left_out,
        )
        for reporter, counts in sorted(reporters.items())
    ]


def _minus(counts: ClassCounts, others: list[ClassCounts]) -> ClassCounts:
    """`counts` with each of `others` taken away."""
    if not others:
        return counts
    spam, ham = dict(counts.spam_words), dict(counts.ham_words)
    spam_messages, ham_messages = counts.spam_messages, counts.ham_messages
    for other in others:
        for word, count in other.spam_words.items():
            spam[word] = spam.get(word, 0.0) - count
        for word, count in other.ham_words.items():
            ham[word] = ham.get(word, 0.0) - count
        spam_messages -= other.spam_messages
        ham_messages -= other.ham_messages
    return ClassCounts(
        {w: c for w, c in spam.items() if c > 1e-9},
        {w: c for w, c in ham.items() if c > 1e-9},
        spam_messages,
        ham_messages,
    )
