"""Reporter keys and message identity: how a report is authenticated and which message it is about.

Pure functions, shared by the API, the storage backends and the command line.
"""

import hashlib
import secrets
import unicodedata

from spam_filter.spam import tokenize

KEY_PREFIX = "sfr_"


def new_key() -> str:
    """A fresh reporter key: 256 random bits, shown once and stored only as its hash."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """The stored form of a key. Keys are random, so a fast hash does not weaken them."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def normalised_text(text: str) -> str:
    """The message as the model sees it: its tokens, whatever the case, spacing, punctuation or
    the values of its numbers. Texts the model cannot tell apart are one message."""
    return " ".join(tokenize(unicodedata.normalize("NFKC", text)))


def text_key(text: str) -> str:
    """Which message a text is: reports of the same normalised text are votes on one message."""
    return hashlib.sha256(normalised_text(text).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def message_key(*, text_hash: str, message_id: str | None) -> str:
    """What one reporter's vote is about: the product's message id, else the message's text (by
    its `text_key`, which the caller has already computed: it costs more than the rest)."""
    return "id:" + message_id if message_id is not None else "text:" + text_hash
