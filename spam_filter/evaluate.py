"""Compare this project's model with the blog tutorial's and scikit-learn's over seeded splits.

Run `python -m spam_filter.evaluate`: every method is trained and scored on the same stratified
70/30 splits of spam.csv, and the mean true-positive rate (spam caught), false-positive rate
(legitimate messages flagged) and accuracy are printed side by side, with their standard deviation
over the splits. Progress goes to stderr, the table to stdout.
"""

import argparse
import math
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

import duckdb
import pandas as pd

try:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline
except ImportError as error:  # an extra: `make run` installs the project without it
    raise SystemExit(
        "the comparison needs scikit-learn: .venv/bin/pip install -e '.[evaluate]'"
    ) from error

from spam_filter import constants, learning, settings
from spam_filter.broadcasts import broadcast_weights
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.scoring import Score
from spam_filter.spam import compare_text_to_bow

TUTORIAL_API = "tutorial, as its API scores"
TUTORIAL_NORMALISED = "tutorial, normalised scoring"
THIS_PROJECT = "this project"
SKLEARN = "scikit-learn MultinomialNB + CountVectorizer"
METHODS = (TUTORIAL_API, TUTORIAL_NORMALISED, THIS_PROJECT, SKLEARN)
RATES = ("true_positive_rate", "false_positive_rate", "accuracy")
TEST_SIZE = constants.TEST_SIZE

# Trains on (texts, labels) and returns the spam decision for each of the test texts.
Method = Callable[[Sequence[str], Sequence[bool], Sequence[str]], list[bool]]
TutorialModel = tuple[dict[str, float], dict[str, float], float]

_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]")


def _tutorial_tokens(text: str) -> list[str]:
    """Lower-case, strip punctuation and split on whitespace, as the tutorial's training does."""
    return _NOT_WORD_OR_SPACE.sub("", text.lower()).split()


def _tutorial_train(texts: Sequence[str], labels: Sequence[bool]) -> TutorialModel:
    """Train as the tutorial does, reproduced here only for comparison.

    Only words seen in both classes are kept, and P(word | class) is the word's count over the
    class's total count of kept words, without smoothing.
    """
    spam_counts: Counter[str] = Counter()
    non_spam_counts: Counter[str] = Counter()
    for text, spam in zip(texts, labels, strict=True):
        (spam_counts if spam else non_spam_counts).update(_tutorial_tokens(text))
    kept = spam_counts.keys() & non_spam_counts.keys()
    spam_total = sum(spam_counts[word] for word in kept)
    non_spam_total = sum(non_spam_counts[word] for word in kept)
    spam_bow = {word: spam_counts[word] / spam_total for word in kept}
    non_spam_bow = {word: non_spam_counts[word] / non_spam_total for word in kept}
    return spam_bow, non_spam_bow, sum(map(bool, labels)) / len(labels)


def _tutorial_method(tokens: Callable[[str], list[str]]) -> Method:
    """Build the tutorial's train-and-decide method, scoring on `tokens` of each test text."""

    def fit_predict(
        texts: Sequence[str], labels: Sequence[bool], test_texts: Sequence[str]
    ) -> list[bool]:
        spam_bow, non_spam_bow, percent_spam = _tutorial_train(texts, labels)
        return [
            compare_text_to_bow(tokens(text), spam_bow, non_spam_bow, percent_spam)
            for text in test_texts
        ]

    return fit_predict


_TRAINING_SPLIT = """
    CREATE TABLE public.spam_training_dataframe AS
    SELECT
        spam, body, 'sms_spam_collection' AS source, false AS synthetic,
        NULL::INTEGER AS reporter_id, false AS capped, weight::DOUBLE AS weight
    FROM training_frame
"""


def _project_method(alpha: float, false_positive_cost: float) -> Method:
    """Build the method that trains as the pipeline does: the same SQL counts in an in-memory
    DuckDB warehouse, the same out-of-fold threshold, scored with `SpamModel`."""

    def fit_predict(
        texts: Sequence[str], labels: Sequence[bool], test_texts: Sequence[str]
    ) -> list[bool]:
        with duckdb.connect() as conn:
            conn.execute("CREATE SCHEMA public")
            frame = pd.DataFrame(
                {"spam": labels, "body": texts, "weight": broadcast_weights(texts)}
            )
            conn.register("training_frame", frame)
            conn.execute(_TRAINING_SPLIT)
            learning.count_training_words(conn, 1.0, constants.MAX_VOCABULARY)
            learned = learning.learn(
                conn,
                [],
                alpha,
                false_positive_cost,
                constants.COLLECTION_FALSE_POSITIVE_BUDGET,
                constants.USER_FALSE_POSITIVE_BUDGET,
            )
        return [learned.model.is_spam(text) for text in test_texts]

    return fit_predict


def _sklearn_fit_predict(
    texts: Sequence[str], labels: Sequence[bool], test_texts: Sequence[str]
) -> list[bool]:
    """Train and score scikit-learn's multinomial naive Bayes on word counts, all defaults."""
    pipeline = make_pipeline(CountVectorizer(), MultinomialNB())
    pipeline.fit(list(texts), list(labels))
    return [bool(p) for p in pipeline.predict(list(test_texts))]


def _methods(alpha: float, false_positive_cost: float) -> dict[str, Method]:
    """Map each method name to its train-and-decide function."""
    return {
        TUTORIAL_API: _tutorial_method(str.split),
        TUTORIAL_NORMALISED: _tutorial_method(_tutorial_tokens),
        THIS_PROJECT: _project_method(alpha, false_positive_cost),
        SKLEARN: _sklearn_fit_predict,
    }


def _rates(predicted: Sequence[bool], actual: Sequence[bool]) -> dict[str, float]:
    """Compute the true-positive rate, false-positive rate and accuracy of the predictions."""
    pairs = Counter(zip(predicted, actual, strict=True))
    score = Score(
        true_positives=pairs[True, True],
        false_positives=pairs[True, False],
        true_negatives=pairs[False, False],
        false_negatives=pairs[False, True],
    )
    return {rate: getattr(score, rate) for rate in RATES}


def split_rates(
    texts: Sequence[str],
    labels: Sequence[bool],
    splits: int,
    alpha: float,
    false_positive_cost: float,
) -> dict[str, list[dict[str, float]]]:
    """Score every method on stratified 70/30 splits seeded 0..splits-1, one row per split."""
    methods = _methods(alpha, false_positive_cost)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    for seed in range(splits):
        print(f"split {seed + 1}/{splits}", file=sys.stderr, flush=True)
        train_texts, test_texts, train_labels, test_labels = train_test_split(
            list(texts), list(labels), test_size=TEST_SIZE, stratify=labels, random_state=seed
        )
        for name, fit_predict in methods.items():
            predicted = fit_predict(train_texts, train_labels, test_texts)
            results[name].append(_rates(predicted, test_labels))
    return results


def evaluate(
    texts: Sequence[str],
    labels: Sequence[bool],
    splits: int,
    alpha: float,
    false_positive_cost: float,
) -> dict[str, dict[str, float]]:
    """Return each method's rates averaged over the seeded splits."""
    per_split = split_rates(texts, labels, splits, alpha, false_positive_cost)
    return {name: _summary(rows, statistics.fmean) for name, rows in per_split.items()}


def _summary(
    rows: Sequence[dict[str, float]], statistic: Callable[[list[float]], float]
) -> dict[str, float]:
    """Apply `statistic` to each rate across the split rows."""
    return {rate: statistic([row[rate] for row in rows]) for rate in RATES}


def _stdev(values: list[float]) -> float:
    """Return the sample standard deviation, or 0 when there is a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def format_table(per_split: dict[str, list[dict[str, float]]]) -> str:
    """Render mean ± standard deviation of each method's rates as an aligned text table."""
    header = ("method", "TPR (spam caught)", "FPR (ham flagged)", "accuracy")
    lines = [header]
    for name, rows in per_split.items():
        mean, spread = _summary(rows, statistics.fmean), _summary(rows, _stdev)
        lines.append(
            (
                name,
                f"{mean['true_positive_rate']:.4f} ± {spread['true_positive_rate']:.4f}",
                f"{mean['false_positive_rate']:.2%} ± {spread['false_positive_rate']:.2%}",
                f"{mean['accuracy']:.4f} ± {spread['accuracy']:.4f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def _positive_float(value: str) -> float:
    """Parse a command-line value that must be a positive finite number."""
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {value}")
    return number


def _positive_int(value: str) -> int:
    """Parse a command-line value that must be a positive integer."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return number


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; model defaults are the pipeline's (`spam_filter.constants`)."""
    parser = argparse.ArgumentParser(
        prog="python -m spam_filter.evaluate",
        description="Compare this project's spam model with the tutorial's and scikit-learn's.",
    )
    parser.add_argument("--alpha", type=_positive_float, default=constants.ALPHA)
    parser.add_argument(
        "--false-positive-cost", type=_positive_float, default=constants.FALSE_POSITIVE_COST
    )
    parser.add_argument("--splits", type=_positive_int, default=10)
    parser.add_argument("--csv", default=str(settings.spam_csv_path()))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate every method on spam.csv and print the comparison table."""
    args = _parse_args(argv)
    started = time.perf_counter()
    data = read_sms_spam_collection(args.csv)
    texts, labels = data["body"].tolist(), data["spam"].tolist()
    per_split = split_rates(texts, labels, args.splits, args.alpha, args.false_positive_cost)
    print(
        f"{args.splits} stratified {1 - TEST_SIZE:.0%}/{TEST_SIZE:.0%} splits (seeds "
        f"0..{args.splits - 1}) of {args.csv}: {len(texts):,} messages, {sum(labels):,} spam\n"
        f"this project: alpha={args.alpha}, false_positive_cost={args.false_positive_cost}; "
        "mean ± standard deviation over the splits\n"
    )
    print(format_table(per_split))
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
