"""Copies of a broadcast share one message's training weight."""

import pytest

from spam_filter import settings
from spam_filter.broadcasts import _group, _similar, _words, broadcast_ids, broadcast_weights
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
    # Counted with their numbers, these two would share 6 words of 12.
    numbers = [
        "Call 0906 now claim code 341 valid 12 hours",
        "Call 0800 now claim code 999 valid 24 hours",
    ]
    assert broadcast_ids(numbers) == [0, 0]


def test_texts_join_a_broadcast_at_the_similarity_and_not_below():
    shared = [f"word{letter}" for letter in "abcdefg"]
    first = " ".join([*shared, "x", "xx"])
    at_similarity = " ".join([*shared, "y"])  # 7 shared words of 10: 0.7
    below = " ".join([*shared, "z", "zz", "zzz"])  # 7 of 12, and 7 of 11 beside the second
    assert broadcast_weights([first, at_similarity, below], 0.7) == pytest.approx([0.5, 0.5, 1.0])


def test_texts_without_words_copy_nothing():
    assert broadcast_ids(["", "   ", "12", ":-)", "ok"]) == [None, None, None, None, 0]
    assert broadcast_weights(["", "12", "ok", "OK!"]) == pytest.approx([1.0, 1.0, 0.5, 0.5])


@pytest.mark.parametrize("similarity", [0.0, -0.5, 1.5])
def test_a_similarity_outside_0_to_1_is_refused(similarity):
    with pytest.raises(ValueError, match="similarity"):
        broadcast_ids(["a b", "c d"], similarity)


def test_the_collections_messages_weigh_as_its_distinct_broadcasts(sms_texts):
    ids = broadcast_ids(sms_texts)
    # Of 5,572 messages, 4,852 broadcasts and 4 texts without words: the account statement sent
    # six times with no number in its "for ... shows" is one broadcast.
    assert len({broadcast for broadcast in ids if broadcast is not None}) == 4_852
    assert ids.count(None) == 4
    statements = {
        broadcast
        for text, broadcast in zip(sms_texts, ids, strict=True)
        if text.startswith("PRIVATE! Your 2003 Account Statement for shows")
    }
    assert len(statements) == 1
    assert sum(broadcast_weights(sms_texts)) == pytest.approx(4_856)


def test_the_weights_do_not_depend_on_the_order_of_the_texts(sms_texts):
    texts = sms_texts[:2000]
    backwards = broadcast_weights(texts[::-1])
    assert broadcast_weights(texts) == pytest.approx(backwards[::-1])


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
