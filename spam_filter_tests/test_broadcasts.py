"""Copies of a broadcast share one message's training weight."""

import pytest

from spam_filter import settings
from spam_filter.broadcasts import _group, _similar, _words, broadcast_weights
from spam_filter.datasets import read_sms_spam_collection


@pytest.fixture(scope="module")
def sms_texts() -> list[str]:
    return read_sms_spam_collection(str(settings.spam_csv_path()))["body"].tolist()


def test_copies_with_other_numbers_and_a_word_changed_share_one_weight():
    texts = [
        "Call 09061701461 now, claim code KL341 valid 12 hours",
        "CALL 09061701939 NOW! Claim code KL341. Valid 12hrs",  # numbers and one word differ
        "call now to claim your code",  # the same subject in other words
        "see you at 5",
    ]
    assert broadcast_weights(texts) == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_texts_join_a_broadcast_at_the_similarity_and_not_below():
    shared = [f"word{letter}" for letter in "abcdefg"]
    first = " ".join([*shared, "x", "xx"])
    at_similarity = " ".join([*shared, "y"])  # 7 shared words of 10: 0.7
    below = " ".join([*shared, "z", "zz", "zzz"])  # 7 of 12, and 7 of 11 beside the second
    assert broadcast_weights([first, at_similarity, below], 0.7) == pytest.approx([0.5, 0.5, 1.0])


def test_the_collections_messages_weigh_as_its_distinct_broadcasts(sms_texts):
    weights = broadcast_weights(sms_texts)
    assert all(0 < weight <= 1 for weight in weights)
    # Of 5,572 messages, 4,913 broadcasts: the account-statement template's 14 copies are one.
    assert sum(weights) == pytest.approx(4_913)


def test_comparing_by_rare_words_groups_as_comparing_with_every_group(sms_texts):
    distinct = list(dict.fromkeys(_words(text) for text in sms_texts[:1500]))
    firsts: list[frozenset[str]] = []
    every_group: dict[frozenset[str], int] = {}
    for words in distinct:
        group = next((g for g, f in enumerate(firsts) if _similar(words, f, 0.7)), None)
        if group is None:
            group = len(firsts)
            firsts.append(words)
        every_group[words] = group
    assert _group(distinct, 0.7) == every_group
