"""The impact check: the model without each reporter is scored on gold from the counts alone."""

from collections import Counter

import numpy as np
import pytest

from spam_filter import settings
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.learning import ClassCounts, cost_threshold
from spam_filter.reporter_impact import GoldSet, gold_log_odds, reporter_impacts
from spam_filter.spam import SpamModel, smoothed_bags_of_words, tokenize


def _counts(messages: list[tuple[str, bool]]) -> ClassCounts:
    spam, ham = Counter(), Counter()
    for text, is_spam in messages:
        (spam if is_spam else ham).update(tokenize(text))
    spam_messages = sum(1 for _, s in messages if s)
    return ClassCounts(dict(spam), dict(ham), spam_messages, len(messages) - spam_messages)


def _plus(a: ClassCounts, b: ClassCounts) -> ClassCounts:
    return ClassCounts(
        dict(Counter(a.spam_words) + Counter(b.spam_words)),
        dict(Counter(a.ham_words) + Counter(b.ham_words)),
        a.spam_messages + b.spam_messages,
        a.ham_messages + b.ham_messages,
    )


@pytest.fixture(scope="module")
def collection() -> tuple[list[tuple[str, bool]], list[tuple[bool, str]]]:
    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    rows = list(zip(frame["body"], frame["spam"], strict=True))
    return rows[:4000], [(spam, text) for text, spam in rows[4000:]]


def test_gold_scores_match_the_model_built_from_the_same_counts(collection):
    training, gold_rows = collection
    counts = _counts(training)
    gold = GoldSet(gold_rows)
    spam_bow, ham_bow = smoothed_bags_of_words(counts.spam_words, counts.ham_words, 0.1)
    model = SpamModel(spam_bow, ham_bow, 0.5)
    log_odds = gold_log_odds(gold, counts, _totals(counts), 0.1)
    expected = [model.score(text) for _, text in gold_rows]
    scores = [sum(log_odds[gold.words.index(w)] for w in tokenize(t)) for _, t in gold_rows[:50]]
    assert scores == pytest.approx(expected[:50])


def _totals(counts: ClassCounts):
    from spam_filter.reporter_impact import _Totals

    return _Totals.of(counts)


def test_a_reporter_that_makes_gold_worse_is_left_out_and_an_honest_one_is_not(collection):
    training, gold_rows = collection
    base = _counts(training)
    ham_words = [w for w, _ in Counter(base.ham_words).most_common(300)]
    rng = np.random.default_rng(0)
    # Common legitimate words reported as spam, as many as one hostile key may send.
    dictionary = [(" ".join(rng.choice(ham_words, size=8)), True) for _ in range(3000)]
    honest = [(text, spam) for text, spam in training[:150]]  # real messages, true labels
    reporters = {1: _counts(dictionary), 2: _counts(honest)}
    everyone = _plus(_plus(base, reporters[1]), reporters[2])
    threshold = cost_threshold(everyone.spam_messages, everyone.ham_messages, 8.0)
    impacts = {
        impact.reporter_id: impact
        for impact in reporter_impacts(
            GoldSet(gold_rows), everyone, reporters, 0.1, threshold, 8.0, margin=8.0
        )
    }
    assert impacts[1].left_out and impacts[1].harm > 8.0
    assert not impacts[2].left_out and impacts[2].harm <= 8.0


def test_without_gold_nobody_is_left_out(collection):
    training, _ = collection
    counts = _counts(training)
    impacts = reporter_impacts(GoldSet([]), counts, {1: counts}, 0.1, 0.0, 8.0, 8.0)
    assert [i.left_out for i in impacts] == [False]
