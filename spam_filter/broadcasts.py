"""Which texts are copies of one broadcast, so that training counts a message sent many times once.

Spam arrives as broadcasts: the SMS collection holds one "account statement" template a dozen
times and prize claims as often, each copy with its own numbers and a word or two changed. Counted
per copy, a broadcast's every word weighs as if that many senders had chosen it: the collection's
30 spams with "code" are 7 broadcasts, and naive Bayes took "code" for strong evidence, so
one-time codes looked like spam. The copies of a broadcast therefore share one message's weight
in the word counts (among the copies the training split holds). Legitimate messages repeat too
("Sorry, I'll call later" 30 times word for word), and count once the same way.
"""

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from spam_filter.spam import DIGIT_PATTERN, tokenize

BROADCAST_SIMILARITY = 0.6
"""Two texts are copies of one broadcast when their sets of words overlap this much (Jaccard:
shared words over all words of the two). Words with digits (prices, times, short codes) are left
out; a phone number's kind (`spam.LONG_NUMBER_TOKEN`) is a word like any other."""

_DIGIT = re.compile(DIGIT_PATTERN)
Words = frozenset[str]


def broadcast_ids(
    texts: Iterable[str], similarity: float = BROADCAST_SIMILARITY
) -> list[int | None]:
    """Each text's broadcast, numbered from 0; None for a text without words, which copies
    nothing (only numbers, punctuation or blanks).

    Texts are taken in the order of their sorted words, each joining the earliest broadcast whose
    first text it is similar enough to, so the result depends on the texts alone, not on their
    order.

    Raises:
        ValueError: `similarity` is not in (0, 1].
    """
    if not 0 < similarity <= 1:
        raise ValueError(f"similarity must be in (0, 1], not {similarity}")
    words = [_words(text) for text in texts]
    broadcast_of = _group(sorted({w for w in words if w}, key=sorted), similarity)
    return [broadcast_of.get(text_words) for text_words in words]


def broadcast_weights(
    texts: Iterable[str], similarity: float = BROADCAST_SIMILARITY
) -> list[float]:
    """Each text's weight among `texts`: 1 over its broadcast's copies there (1 without words)."""
    ids = broadcast_ids(texts, similarity)
    copies = Counter(ids)
    return [1.0 if broadcast is None else 1.0 / copies[broadcast] for broadcast in ids]


def _words(text: str) -> Words:
    return frozenset(token for token in tokenize(text) if not _DIGIT.search(token))


def _group(distinct: Sequence[Words], similarity: float) -> dict[Words, int]:
    """Greedy grouping of distinct word sets: each joins the earliest group whose first member it
    is similar to, or starts a group.

    Two sets this similar share a word among the rarest few of each (prefix filtering: a set's
    `len - ceil(similarity * len) + 1` rarest words, rarity counted over all sets), so each set
    is compared only with the groups indexed under its own rarest words, not with every group.
    """
    frequency = Counter(word for words in distinct for word in words)
    firsts: list[Words] = []
    by_rare_word: dict[str, list[int]] = defaultdict(list)
    group_of: dict[Words, int] = {}
    for words in distinct:
        rarest = sorted(words, key=lambda word: (frequency[word], word))
        prefix = rarest[: len(rarest) - math.ceil(similarity * len(rarest)) + 1]
        candidates = {group for word in prefix for group in by_rare_word[word]}
        similar = [group for group in candidates if _similar(words, firsts[group], similarity)]
        if similar:
            group_of[words] = min(similar)
            continue
        group_of[words] = len(firsts)
        for word in prefix:
            by_rare_word[word].append(len(firsts))
        firsts.append(words)
    return group_of


def _similar(words: Words, other: Words, similarity: float) -> bool:
    """Jaccard similarity at least `similarity`; sets whose sizes alone rule it out are not
    intersected (the shared words can be no more than the smaller set)."""
    smaller, larger = sorted((len(words), len(other)))
    if smaller < similarity * larger:
        return False
    shared = len(words & other)
    return shared >= similarity * (smaller + larger - shared)
