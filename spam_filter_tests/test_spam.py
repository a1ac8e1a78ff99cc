"""The tokenizer, training and scoring shared by the pipeline and the API."""

import json
import math

import duckdb
import pytest

from spam_filter import settings
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.spam import (
    LONG_NUMBER_TOKEN,
    SpamModel,
    compare_text_to_bow,
    decision_prior,
    is_spam,
    load_model,
    smoothed_bags_of_words,
    tokenize,
    train_model,
)
from spam_filter.tokenizer_sql import install_tokenizer

TRICKY_TEXTS = [
    "",
    "   \t\n",
    "WINNER!! You won £1000, call 08452810075 now",
    "Ünïcödé WÖRDS and émojis 😀👍 stay",
    "İSTANBUL ΣΑΣ straße ǅ",
    "don't-stop_me.now;ok?",
    "$5 or €10 or £20",
    "x\u00a0y\u2003z\u200bw",
    "1234 12345 123456789012",
    "\\slashes\\ and [brackets] {braces} <tags>",
]


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello World", ["hello", "world"]),
        ("WINNER!!!", ["winner"]),
        ("free, FREE; free.", ["free", "free", "free"]),
        ("call 4 u 2day", ["call", "4", "u", "2day"]),
        # A phone number is one token, a short code another, a one-time code or reference none.
        ("txt 87121 or 08452810075", ["txt", "00000", "or", LONG_NUMBER_TOKEN]),
        ("Your code is 482913", ["your", "code", "is"]),
        ("ref 123456789 or 1234567890", ["ref", "or", LONG_NUMBER_TOKEN]),
        ("won £1000 or $50", ["won", "£", "1000", "or", "$", "50"]),
        ("paid £23.50, card ending 4421", ["paid", "£", "23", "50", "card", "ending", "4421"]),
        ("€5", ["€", "5"]),
        ("٣٤٥ ١٢٣٤٥٦٧", ["٣٤٥", "١٢٣٤٥٦٧"]),  # only ASCII digits are numbers
        ("Café Über", ["café", "über"]),
        ("😀 ok", ["😀", "ok"]),
        ("", []),
        ("?!...", []),
    ],
)
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


@pytest.fixture(scope="module")
def sms_texts() -> list[str]:
    return read_sms_spam_collection(str(settings.spam_csv_path()))["body"].tolist()


def test_sql_tokenizer_matches_python_token_for_token(sms_texts):
    texts = sms_texts + TRICKY_TEXTS
    conn = duckdb.connect()
    install_tokenizer(conn)
    rows = conn.execute(
        "SELECT i, spam_tokens(texts[i]) FROM (SELECT $texts AS texts), "
        "range(1, len($texts) + 1) AS r(i) ORDER BY i",
        {"texts": texts},
    ).fetchall()
    assert len(rows) == len(texts)
    mismatches = [(texts[i - 1], t) for i, t in rows if t != tokenize(texts[i - 1])]
    assert mismatches == []


def test_every_character_lower_cases_alike_in_python_and_duckdb():
    characters = [chr(c) for c in range(0x20, 0x30000) if not 0xD800 <= c < 0xE000]
    conn = duckdb.connect()
    install_tokenizer(conn)
    # Letters joined to "a" so each character forms or joins a token when it is not a separator.
    duck = conn.execute(
        "SELECT list_transform($c, lambda x: spam_tokens('a' || x))", {"c": characters}
    ).fetchone()[0]
    assert [c for c, t in zip(characters, duck, strict=True) if t != tokenize("a" + c)] == []


def test_smoothing_gives_every_word_probability_in_both_classes():
    spam_bow, non_spam_bow = smoothed_bags_of_words({"win": 3, "cash": 1}, {"lunch": 2}, 0.5)
    assert set(spam_bow) == set(non_spam_bow) == {"win", "cash", "lunch"}
    assert all(p > 0 for p in [*spam_bow.values(), *non_spam_bow.values()])
    assert math.isclose(sum(spam_bow.values()), 1.0)
    assert math.isclose(sum(non_spam_bow.values()), 1.0)
    assert spam_bow["win"] == pytest.approx((3 + 0.5) / (4 + 1.5))


def test_smoothing_rejects_non_positive_alpha():
    with pytest.raises(ValueError):
        smoothed_bags_of_words({"a": 1}, {"b": 1}, 0)


def test_decision_prior_discounts_the_spam_share_by_the_false_positive_cost():
    assert decision_prior(25, 100, 1.0) == pytest.approx(0.25)
    prior = decision_prior(25, 100, 8.0)
    assert math.log(prior / (1 - prior)) == pytest.approx(math.log(25 / 75) - math.log(8.0))
    with pytest.raises(ValueError):
        decision_prior(0, 100, 1.0)


@pytest.fixture(scope="module")
def model() -> SpamModel:
    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    return train_model(zip(frame["body"], frame["spam"], strict=True), 0.1, 8.0)


@pytest.mark.parametrize(
    "text",
    [
        "WINNER!! You have won a £1000 cash prize. Call 09061701461 to claim now",
        "FREE entry to win tickets, txt WIN to 87121",
        "URGENT! Your mobile number has been awarded a £2000 bonus. Call 09066362231",
    ],
)
def test_obvious_spam_is_flagged(model, text):
    assert is_spam(text, model)
    assert model.spam_probability(text) > 0.5


@pytest.mark.parametrize(
    "text",
    [
        "Are we still meeting for lunch tomorrow?",
        "Ok lar... I'll call you when I get home",
        "Can you pick up the kids after school today",
    ],
)
def test_obvious_ham_is_not_flagged(model, text):
    assert not is_spam(text, model)
    assert model.spam_probability(text) < 0.5


@pytest.mark.parametrize(
    "variants",
    [
        (
            "you are the winner!",
            "YOU ARE THE WINNER!",
            "You are the winner",
            "you, are the winner?!",
        ),
        ("see you at the meeting", "SEE YOU AT THE MEETING!!!", "see you, at the meeting."),
    ],
)
def test_case_and_punctuation_do_not_change_the_answer(model, variants):
    assert len({model.score(v) for v in variants}) == 1


def test_explanation_adds_up_to_the_score(model, sms_texts):
    for text in sms_texts[:300]:
        explanation = model.explain(text, top=1_000)
        assert explanation.log_odds == model.score(text)
        assert explanation.prior_log_odds == model.prior_log_odds
        total = explanation.prior_log_odds + sum(item.log_odds for item in explanation.tokens)
        assert total == pytest.approx(explanation.log_odds, abs=1e-9)


def test_explanation_lists_the_strongest_tokens_first_with_their_counts(model):
    text = "WINNER! winner, you have won a £1000 prize. Call 09061701461 now, qwxzvb"
    explanation = model.explain(text, top=3)
    assert len(explanation.tokens) == 3
    everything = model.explain(text, top=100).tokens
    assert explanation.tokens == everything[:3]
    sizes = [abs(item.log_odds) for item in everything]
    assert sizes == sorted(sizes, reverse=True)
    by_token = {item.token: item for item in everything}
    assert by_token["winner"].count == 2
    assert by_token["winner"].log_odds == pytest.approx(2 * model.log_odds["winner"])
    assert "qwxzvb" not in by_token  # unknown to the model: it moves nothing
    assert everything[0].log_odds > 0  # an obvious spam is pushed towards spam the most


@pytest.mark.parametrize("text", ["", "?!", "qwxzvb"])
def test_explanation_without_known_tokens_is_the_prior(model, text):
    explanation = model.explain(text)
    assert explanation.tokens == ()
    assert explanation.log_odds == explanation.prior_log_odds == model.prior_log_odds
    assert model.explain("you won a prize", top=0).tokens == ()


def test_scoring_agrees_with_the_tutorials_comparison(model, sms_texts):
    for text in sms_texts[:500]:
        tutorial = compare_text_to_bow(
            tokenize(text), model.spam_bow, model.non_spam_bow, model.percent_spam
        )
        assert model.is_spam(text) == tutorial


def test_weights_round_trip_through_json(tmp_path, model):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(model.to_weights()))
    loaded = load_model(path)
    assert {"spam_bow", "non_spam_bow", "percent_spam"} <= set(json.loads(path.read_text()))
    assert loaded.score("free prize") == pytest.approx(model.score("free prize"))


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"spam_bow": {"a": 0.5}, "non_spam_bow": {"a": 0.5}}',
        '{"spam_bow": {"a": 0.5}, "non_spam_bow": {"b": 0.5}, "percent_spam": 0.3}',
        '{"spam_bow": {"a": 0}, "non_spam_bow": {"a": 0.5}, "percent_spam": 0.3}',
        # Python's json reads these; a NaN made every verdict NaN and the answer invalid JSON.
        '{"spam_bow": {"a": NaN}, "non_spam_bow": {"a": 0.5}, "percent_spam": 0.3}',
        '{"spam_bow": {"a": 0.5}, "non_spam_bow": {"a": Infinity}, "percent_spam": 0.3}',
        '{"spam_bow": {"a": 0.5}, "non_spam_bow": {"a": 0.5}, "percent_spam": 1.5}',
    ],
)
def test_malformed_weights_are_rejected(tmp_path, content):
    path = tmp_path / "weights.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        load_model(path)
