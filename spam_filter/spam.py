"""Tokenize, train and score: the naive Bayes model shared by the pipeline, the API and evaluation.

This module imports neither Dagster nor Flask, so training and serving run the very same code.
The tokenizer is also expressed in SQL (`spam_filter.tokenizer_sql`) for counting millions of
messages inside DuckDB; both follow the patterns below and a test holds them token for token.
"""

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Long numbers count by their kind, not their value: each value is rare, but the kind is telling.
# A run of ten or more digits (a phone number) is one shared token, and a run of five (a short code
# to text) another. Six to nine digits (one-time codes, order and reference numbers) say nothing of
# spam either way and become no token: a message is no more likely spam for carrying a code.
# Shorter numbers (prices, times, dates) stay as they are.
LONG_NUMBER_PATTERN = r"[0-9]{10,}"
LONG_NUMBER_TOKEN = "longnumber"
CODE_NUMBER_PATTERN = r"[0-9]{6,}"
SHORT_CODE_PATTERN = r"[0-9]{5}"
SHORT_CODE_TOKEN = "00000"
DIGIT_PATTERN = r"[0-9]"
# A token is a currency sign on its own, or a run of anything but ASCII whitespace, ASCII
# punctuation and currency signs: letters of any script, digits and emoji survive. Written without
# shorthand classes (\w, \s) because Python's `re` and DuckDB's RE2 disagree on them for Unicode.
CURRENCY_SIGNS = "£$€"
# The separators as the inside of a regular-expression character class.
SEPARATOR_CLASS = r" \t\n\r\f\v!" + '"' + r"#%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~"
TOKEN_PATTERN = r"[" + CURRENCY_SIGNS + r"]|[^" + SEPARATOR_CLASS + CURRENCY_SIGNS + r"]+"
_ANY_DIGIT = re.compile(DIGIT_PATTERN)
_NUMBER_SHAPES = (
    (re.compile(LONG_NUMBER_PATTERN), f" {LONG_NUMBER_TOKEN} "),
    (re.compile(CODE_NUMBER_PATTERN), " "),
    (re.compile(SHORT_CODE_PATTERN), f" {SHORT_CODE_TOKEN} "),
)
# Python's str.lower() applies two context rules DuckDB's lower() does not (final sigma, and
# U+0130 becoming two code points); mapping those first makes both lower-case every character alike.
_DUCKDB_LOWERS = {"\u03a3": "\u03c3", "\u0130": "i"}
_AS_DUCKDB_LOWERS = str.maketrans(_DUCKDB_LOWERS)
_TOKEN_RE = re.compile(TOKEN_PATTERN)


def tokenize(text: str) -> list[str]:
    """Split a message into the tokens the model counts, in order, repeats kept.

    Args:
        text: The raw message, in any case, with any punctuation.

    Returns:
        Lower-cased tokens; currency signs are tokens of their own, and long numbers are replaced
        by their kind (see `LONG_NUMBER_PATTERN`).
    """
    # translate() with a mapping looks up every character, which costs more than the rest of
    # tokenizing; the two characters it maps are rare, so it runs only when one occurs.
    if any(char in text for char in _DUCKDB_LOWERS):
        text = text.translate(_AS_DUCKDB_LOWERS)
    spaced = text.lower()
    if _ANY_DIGIT.search(spaced):
        for pattern, replacement in _NUMBER_SHAPES:
            spaced = pattern.sub(replacement, spaced)
    return _TOKEN_RE.findall(spaced)


def count_tokens(texts: Iterable[str]) -> Counter[str]:
    """Count every token of every text."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tokenize(text))
    return counts


def compare_text_to_bow(
    text: Iterable[str],
    spam_bow: Mapping[str, float],
    non_spam_bow: Mapping[str, float],
    percent_spam: float,
) -> bool:
    """Decide spam from tokens the way the tutorial does: sum log-probabilities of known words.

    Kept as the reference definition of the decision; `SpamModel` computes the same sums faster.
    """
    known_words = [word for word in text if word in spam_bow]
    spam_score = math.log(percent_spam) + sum(math.log(spam_bow[w]) for w in known_words)
    non_spam_score = math.log(1 - percent_spam) + sum(
        math.log(non_spam_bow[w]) for w in known_words
    )
    return non_spam_score < spam_score


def smoothed_bags_of_words(
    spam_counts: Mapping[str, int], non_spam_counts: Mapping[str, int], alpha: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Turn token counts into P(word | class) over the union vocabulary with additive smoothing.

    The tutorial kept only words seen in both classes, which throws away exactly the words that
    separate them; smoothing keeps every word and gives it a non-zero probability in both classes.
    """
    if alpha <= 0:
        raise ValueError("alpha must be positive so that every word has a non-zero probability")
    vocabulary = set(spam_counts) | set(non_spam_counts)
    spam_total = sum(spam_counts.values()) + alpha * len(vocabulary)
    non_spam_total = sum(non_spam_counts.values()) + alpha * len(vocabulary)
    spam_bow = {w: (spam_counts.get(w, 0) + alpha) / spam_total for w in vocabulary}
    non_spam_bow = {w: (non_spam_counts.get(w, 0) + alpha) / non_spam_total for w in vocabulary}
    return spam_bow, non_spam_bow


def decision_prior(spam_messages: int, total_messages: int, false_positive_cost: float) -> float:
    """The spam prior to score with: the training share of spam, discounted by the cost of a false
    positive.

    Calling spam when the posterior odds exceed `false_positive_cost` (rather than 1) is the Bayes
    decision when hiding one legitimate message costs as much as letting that many spams through.
    Folding it into the prior keeps the weights format and `compare_text_to_bow` unchanged.
    """
    if not 0 < spam_messages < total_messages:
        raise ValueError("training data needs both spam and non-spam messages")
    if false_positive_cost <= 0:
        raise ValueError("false_positive_cost must be positive")
    share = spam_messages / total_messages
    return share / (share + (1 - share) * false_positive_cost)


@dataclass(frozen=True)
class TokenContribution:
    """How far one token of a message moved its score, counting each occurrence."""

    token: str
    count: int
    log_odds: float
    """`count` times the token's log-odds: positive towards spam, negative towards not spam."""


@dataclass(frozen=True)
class Explanation:
    """Why a message got its score: the prior and the tokens that moved it most."""

    log_odds: float
    """The message's whole score, as `SpamModel.score` computes it."""
    prior_log_odds: float
    """The cost-adjusted prior's share of the score, the same for every message."""
    tokens: tuple[TokenContribution, ...]
    """Known tokens, largest absolute contribution first; unknown tokens contribute nothing."""


@dataclass(frozen=True)
class SpamModel:
    """A trained model in the weights format, with per-word log-odds precomputed for scoring."""

    spam_bow: Mapping[str, float]
    non_spam_bow: Mapping[str, float]
    percent_spam: float
    info: Mapping[str, Any] = field(default_factory=dict)
    _log_odds: dict[str, float] = field(init=False, repr=False, compare=False)
    _prior_log_odds: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.percent_spam < 1:
            raise ValueError("percent_spam must lie strictly between 0 and 1")
        if set(self.spam_bow) != set(self.non_spam_bow):
            raise ValueError("spam_bow and non_spam_bow must share one vocabulary")
        log_odds = {
            word: math.log(p) - math.log(self.non_spam_bow[word])
            for word, p in self.spam_bow.items()
        }
        object.__setattr__(self, "_log_odds", log_odds)
        object.__setattr__(
            self, "_prior_log_odds", math.log(self.percent_spam) - math.log(1 - self.percent_spam)
        )

    @property
    def vocabulary_size(self) -> int:
        return len(self._log_odds)

    @property
    def log_odds(self) -> Mapping[str, float]:
        """log P(word | spam) - log P(word | not spam), per vocabulary word."""
        return self._log_odds

    @property
    def prior_log_odds(self) -> float:
        return self._prior_log_odds

    def score(self, text: str) -> float:
        """Log-odds of spam: the tutorial's spam score minus its non-spam score."""
        log_odds = self._log_odds
        return self._prior_log_odds + sum(log_odds.get(token, 0.0) for token in tokenize(text))

    def is_spam(self, text: str) -> bool:
        return self.score(text) > 0

    def spam_probability(self, text: str) -> float:
        """The posterior that `is_spam` thresholds at 0.5, from the same log scores."""
        return self.verdict(text)[1]

    def verdict(self, text: str) -> tuple[bool, float]:
        """`is_spam` and `spam_probability` from one scoring of the text."""
        score = self.score(text)
        # math.exp overflows past about 709; the probability is 0 to double precision anyway.
        probability = 0.0 if score < -700 else 1.0 / (1.0 + math.exp(-score))
        return score > 0, probability

    def explain(self, text: str, top: int = 10) -> Explanation:
        """The `top` known tokens of `text` that moved its score most, and the prior's share.

        The score is the prior's log-odds plus each known token's contribution, so the prior and
        all contributions (`top` large enough) add up to `log_odds`, to rounding.
        """
        log_odds = self._log_odds
        counts = Counter(token for token in tokenize(text) if token in log_odds)
        contributions = [
            TokenContribution(token, count, count * log_odds[token])
            for token, count in counts.items()
        ]
        contributions.sort(key=lambda item: (-abs(item.log_odds), item.token))
        return Explanation(
            log_odds=self.score(text),
            prior_log_odds=self._prior_log_odds,
            tokens=tuple(contributions[: max(top, 0)]),
        )

    def to_weights(self) -> dict[str, Any]:
        """The JSON-ready weights file content (`info` adds provenance beside the three keys)."""
        return {
            "spam_bow": dict(self.spam_bow),
            "non_spam_bow": dict(self.non_spam_bow),
            "percent_spam": self.percent_spam,
            **({"info": dict(self.info)} if self.info else {}),
        }

    @classmethod
    def from_weights(cls, weights: Mapping[str, Any]) -> "SpamModel":
        """Build a model from weights-file content, raising ValueError when it is malformed.

        The model may keep the content's own bags rather than copies: callers hand over freshly
        parsed content and must not change it afterwards."""
        try:
            spam_bow = _probabilities(weights["spam_bow"])
            non_spam_bow = _probabilities(weights["non_spam_bow"])
            percent_spam = float(weights["percent_spam"])
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"malformed weights: {error!r}") from error
        # Written so that NaN fails too (every comparison with it is false).
        if not all(0 < p < math.inf for bag in (spam_bow, non_spam_bow) for p in bag.values()):
            raise ValueError("malformed weights: probabilities must be positive and finite")
        return cls(spam_bow, non_spam_bow, percent_spam, dict(weights.get("info") or {}))


def _probabilities(bag: Mapping[str, Any]) -> dict[str, float]:
    """A bag of words as str -> float; the parsed JSON dict itself when it already is one, since a
    copy of a whole vocabulary costs tens of megabytes while a model loads."""
    if type(bag) is dict and all(type(word) is str and type(p) is float for word, p in bag.items()):
        return bag
    return {str(word): float(p) for word, p in bag.items()}


@dataclass(frozen=True)
class TrainedModel:
    """A model and what it was trained on: the value of the pipeline's `spam_model` asset."""

    model: SpamModel
    training_messages: int
    training_spam: int
    alpha: float
    false_positive_cost: float
    seed: int
    test_size: float
    left_out_reporters: tuple[int, ...] = ()
    """Reporters whose reports made the model worse on gold, so training left them out."""
    threshold_reason: str = "the false-positive cost"
    """What placed the decision threshold (folded into `model.percent_spam`)."""

    @property
    def spam_share(self) -> float:
        """The share of spam among the training messages (the prior before the cost)."""
        return self.training_spam / self.training_messages

    def top_spam_words(self, count: int) -> list[tuple[str, float]]:
        """The `count` words whose presence moves a message furthest towards spam."""
        return sorted(self.model.log_odds.items(), key=lambda item: item[1], reverse=True)[:count]


def train_model(
    messages: Iterable[tuple[str, bool]], alpha: float, false_positive_cost: float
) -> SpamModel:
    """Train in Python from (text, is_spam) pairs; the pipeline does the counting in SQL instead.

    Args:
        messages: Labelled training messages.
        alpha: Additive smoothing.
        false_positive_cost: How many missed spams one hidden legitimate message is worth.

    Returns:
        The trained model.
    """
    spam_counts: Counter[str] = Counter()
    non_spam_counts: Counter[str] = Counter()
    spam_messages = total_messages = 0
    for text, spam in messages:
        (spam_counts if spam else non_spam_counts).update(tokenize(text))
        spam_messages += bool(spam)
        total_messages += 1
    spam_bow, non_spam_bow = smoothed_bags_of_words(spam_counts, non_spam_counts, alpha)
    prior = decision_prior(spam_messages, total_messages, false_positive_cost)
    return SpamModel(spam_bow, non_spam_bow, prior)


def is_spam(text: str, model: SpamModel) -> bool:
    """Whether `model` calls `text` spam; the API answers with `SpamModel.verdict`, the same sum."""
    return model.is_spam(text)


def load_model(path: str | Path) -> SpamModel:
    """Read a weights file; raises OSError or ValueError when it is missing or malformed."""
    with open(path, encoding="utf-8") as handle:
        try:
            weights = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
    return SpamModel.from_weights(weights)
