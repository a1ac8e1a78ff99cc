"""Hostile request bodies for the API, as hypothesis strategies, and what the API must answer.

Shared by the Flask test-client tests and the sample sent to a real gunicorn server.
"""

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from spam_filter.serving.request_parsing import MAX_JSON_DEPTH

# Bounded runs for every test that uses these strategies. No example database: nothing is written
# to the work tree, and each run draws afresh. Function-scoped fixtures (an app, a server) are
# stateless across requests, so sharing one between examples is safe.
BOUNDED = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
URL = "/api/find_spam"
MAX_BODY_BYTES = 64 * 1024
MAX_BATCH_TEXTS = 1000

# Strings a careless parser, tokenizer or logger trips on.
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ufeff{}",
    "🙂💥👩‍👩‍👧‍👦🏳️‍🌈",
    "مرحبا، لقد ربحت جائزة! اتصل الآن",
    "שלום \u202ewinner\u202c 09061701461",
    "\u200f\u200e\u202a\u202b\u202d\u2066\u2067\u2069",
    "\ud800",
    "\udfff\ud800",
    "ΣΑΣ İSTANBUL",
    "\r\n\t\x0b\x0c\x1b[31m",
    '"}], "text": "injected',
    "\\u0000",
    "NaN",
    "WINNER!! £1000 call 09061701461 now",
]

# Every Unicode character, lone surrogates included (hypothesis leaves them out by default).
any_character = st.characters(codec=None, exclude_categories=())
texts = st.one_of(
    st.text(any_character, max_size=60),
    st.sampled_from(NASTY_STRINGS),
    # Long strings: some near the body limit, some past it.
    st.builds(
        lambda piece, count: piece * count,
        st.sampled_from(["a", "é", "🙂", "\u202e", "\ud800", "a b "]),
        st.integers(1_000, 40_000),
    ),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.sampled_from(NASTY_STRINGS)
)
json_values = st.recursive(
    scalars | st.text(any_character, max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(any_character, max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Batches around the count limit, built cheaply rather than drawn text by text.
big_batches = st.builds(
    lambda text, count: [text] * count,
    st.sampled_from(["hi", "🙂", ""]),
    st.integers(MAX_BATCH_TEXTS - 2, MAX_BATCH_TEXTS + 2),
)
# Request-like objects: mostly the documented keys, with any value at all.
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"text": texts | json_values},
        optional={"extra": json_values, "explain": st.booleans() | json_values},
    ),
    st.fixed_dictionaries(
        {"texts": st.lists(texts, max_size=5) | st.lists(json_values, max_size=3) | big_batches},
        optional={"model": json_values, "explain": st.booleans()},
    ),
    st.dictionaries(
        st.sampled_from(["text", "texts", "Text", "TEXT", "text ", "message"])
        | st.text(max_size=5),
        texts | json_values,
        max_size=4,
    ),
)
# How the JSON text is put on the wire. json.loads reads UTF-8, -16 and -32 alike.
encodings = st.sampled_from(["ascii-escaped", "utf-8", "utf-16-le", "utf-16-be", "utf-32"])
json_content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/json;"]
)
other_content_types = st.sampled_from(
    [
        None,
        "",
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json-seq",
        "json",
        "*/*",
    ]
)


def encode(payload: Any, encoding: str) -> bytes:
    """`payload` as JSON bytes; lone surrogates go on the wire as they are when not escaped."""
    if encoding == "ascii-escaped":
        return json.dumps(payload).encode("ascii")
    return json.dumps(payload, ensure_ascii=False).encode(encoding, "surrogatepass")


def nesting_depth(value: Any) -> int:
    """How many lists and objects deep `value` goes (0 for a scalar)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max((nesting_depth(item) for item in value), default=0)
    return 0


def expected_status(payload: Any, body: bytes, max_body: int = MAX_BODY_BYTES) -> int:
    """The status the API's contract gives for `payload` sent as `body` with a JSON type."""
    if len(body) > max_body:
        return 413
    if nesting_depth(payload) > MAX_JSON_DEPTH:
        return 400
    if not isinstance(payload, dict) or ("text" in payload) == ("texts" in payload):
        return 400
    if "text" in payload:
        if not isinstance(payload["text"], str):
            return 400
    else:
        batch = payload["texts"]
        if not isinstance(batch, list) or not all(isinstance(text, str) for text in batch):
            return 400
        if not 1 <= len(batch) <= MAX_BATCH_TEXTS:
            return 400
    return 200 if isinstance(payload.get("explain", False), bool) else 400


@st.composite
def repeated_key_documents(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A request with a key repeated in one object at some depth, and the same without the repeat.

    The repeated key may be spelt differently (escaped) the second time: it is the decoded keys
    that must differ.
    """
    obj = draw(st.dictionaries(st.text(any_character, max_size=6), json_values, min_size=1))
    key = draw(st.sampled_from(sorted(obj)))
    spelling = draw(st.sampled_from([json.dumps, _escaped_throughout]))
    pairs = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()]
    repeated = f"{spelling(key)}: {json.dumps(draw(json_values))}"
    position = draw(st.integers(0, len(pairs)))
    with_repeat = "{" + ", ".join([*pairs[:position], repeated, *pairs[position:]]) + "}"
    without = "{" + ", ".join(pairs) + "}"
    # Bury the object under a few levels of lists and objects, then beside a valid "text".
    for wrapper in draw(
        st.lists(st.sampled_from(["[{}]", '{"k": {}}', '[1, {}, "x"]']), max_size=6)
    ):
        with_repeat = wrapper.replace("{}", with_repeat, 1)
        without = wrapper.replace("{}", without, 1)
    if draw(st.booleans()):
        return (
            f'{{"text": "hi", "extra": {with_repeat}}}'.encode("utf-8", "surrogatepass"),
            f'{{"text": "hi", "extra": {without}}}'.encode("utf-8", "surrogatepass"),
        )
    # At the top level: the repeated key is "text" itself.
    return (
        f'{{"text": "hi", "extra": 1, {spelling("text")}: "there"}}'.encode(),
        b'{"text": "hi", "extra": 1}',
    )


def _escaped_throughout(key: str) -> str:
    """`key` as a JSON string with every character escaped: another spelling of the same key."""
    units = key.encode("utf-16-be", "surrogatepass")
    return (
        '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    )


def _in_text(raw: bytes) -> bytes:
    return b'{"text": "' + raw + b'"}'


# Bytes that are not (all) valid JSON text, or are valid but extreme.
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(
        _in_text,
        st.sampled_from(
            [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"a\x00b"]
        ),
    ),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b'{"text": "hi"',
            b'{"text": "hi"}}',
            b'{"text": "hi"} {"text": "again"}',
            b'{"text":\x00"hi"}',
            b'{"text": "\\ud800"}',
            b'{"text": "\\udfff\\ud800"}',
            b'{"text": 1e999999}',
            b'{"text": "hi", "n": 1e999999, "m": -1e999999, "o": 1e-999999}',
            b'{"text": NaN}',
            b'{"text": "hi", "n": NaN, "i": -Infinity}',
            b"\xef\xbb\xbf" + b'{"text": "hi"}',
        ]
    ),
    st.builds(
        lambda digits: b'{"text": "hi", "n": ' + b"9" * digits + b"}",
        st.sampled_from([4_300, 4_301, 60_000]),
    ),
    st.builds(
        lambda depth, opener: opener * depth,
        st.sampled_from([1_000, 60_000]),
        st.sampled_from([b"[", b'{"a":']),
    ),
    st.builds(lambda depth: b"[" * depth + b"]" * depth, st.sampled_from([900, 2_000, 30_000])),
)


def contract_problems(status: int, content_type: str | None, data: bytes) -> list[str]:
    """Ways an answer breaks the API's contract for any request: no 5xx, JSON, shaped 200s."""
    problems = []
    if status >= 500:
        problems.append(f"server error {status}")
    if not (content_type or "").startswith("application/json"):
        return [*problems, f"Content-Type {content_type!r}, not JSON"]
    try:
        body = json.loads(data)
    except ValueError:
        return [*problems, f"body is not JSON: {data[:200]!r}"]
    if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
        return [*problems, f"no boolean success in {body!r:.200}"]
    if status == 200:
        problems.extend(_shape_problems(body))
    elif body["success"] is not False or not isinstance(body.get("error"), str):
        problems.append(f"a {status} must say success false and why: {body!r:.200}")
    return problems


def _shape_problems(body: dict) -> list[str]:
    if body["success"] is not True or not isinstance(body.get("model"), str):
        return [f"a 200 without success and model: {body!r:.200}"]
    if "results" in body:
        if set(body) != {"success", "results", "model"} or not isinstance(body["results"], list):
            return [f"batch answer of the wrong shape: {body!r:.200}"]
        return [p for result in body["results"] for p in _result_problems(result)]
    if set(body) - {"explanation"} != {"success", "is_spam", "spam_probability", "model"}:
        return [f"single answer of the wrong shape: {body!r:.200}"]
    return _result_problems({k: body[k] for k in set(body) - {"success", "model"}})


def _result_problems(result: Any) -> list[str]:
    if not isinstance(result, dict) or set(result) - {"explanation"} != {
        "is_spam",
        "spam_probability",
    }:
        return [f"result of the wrong shape: {result!r:.200}"]
    if "explanation" in result and _explanation_problems(result["explanation"]):
        return [f"explanation of the wrong shape: {result!r:.200}"]
    probability = result["spam_probability"]
    if not isinstance(result["is_spam"], bool) or not isinstance(probability, float):
        return [f"result of the wrong types: {result!r:.200}"]
    if not 0.0 <= probability <= 1.0:
        return [f"probability out of range: {result!r:.200}"]
    if (probability < 0.5 and result["is_spam"]) or (probability > 0.5 and not result["is_spam"]):
        return [f"verdict and probability disagree: {result!r:.200}"]
    return []


def _explanation_problems(explanation: Any) -> bool:
    """Whether an explanation is not the documented object of log-odds and tokens."""
    if not isinstance(explanation, dict) or set(explanation) != {
        "log_odds",
        "prior_log_odds",
        "tokens",
    }:
        return True
    tokens = explanation["tokens"]
    return not isinstance(tokens, list) or any(
        not isinstance(item, dict) or set(item) != {"token", "count", "log_odds"} for item in tokens
    )
