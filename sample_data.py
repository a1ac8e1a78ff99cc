"""Insert labelled synthetic messages into the application database, for load tests and benchmarks.

The rows are marked `synthetic`: they never count in the model's gold metrics. Their words come
from spam.csv's training split alone (the pipeline's default seed and test share), so that a model
trained beside them meets none of the held-out messages' words through them: the held-out part is
the gold set that decides promotion.

The messages have the statistics of real SMS, so that a benchmark pays what real traffic costs
(almost every message distinct, a vocabulary that keeps growing). They are built inside DuckDB
from spam.csv, class by class:

* Words come from the class's own text in the training split. Each class's messages are
  flattened into one list of whitespace tokens (case and punctuation stay on the words), and a
  message is a run of random three-word spans ("phrases") of that list, opening like a real
  message. Every position is equally likely to start a span, so word frequencies follow the
  corpus (Zipfian, as real text) and neighbouring words read like SMS.
* Lengths follow the class's own distribution of token counts.
* About 5% of tokens are rare ones: pseudo-word names and slang whose rank follows a power law,
  and numbers, times, prices and codes; some messages have a typo. The power law makes the
  vocabulary keep growing with the number of messages as real text does (Heaps' law), instead of
  stopping at the corpus's ~9k words.
* Shouted phrases, extra punctuation, emoji, premium-rate numbers and URLs are sprinkled in;
  spam.csv's mojibake ("å£") and placeholders ("&lt;#&gt;") are repaired or filled.

Every random choice is DuckDB's `hash` of one 64-bit number: the row's hash `hash(i, seed)` xor a
salt. `hash` of one integer is a MurmurHash finaliser, so neighbouring salts give unrelated values;
`hash(a, b, c)` of several arguments would not do, as DuckDB combines them so that their low bits
correlate. Separate bit ranges of one hash feed separate choices. So a seed gives the same
messages, and rows numbered after the existing ones give new messages. All rows go in as one
transaction: an interrupted run leaves the table as it was.

Why the SQL has its shape (DuckDB 2.0, 2 cores):
* `range()` is a single-threaded source; a chunk's rows come from a TEMP table of offsets instead,
  whose row groups DuckDB scans on both cores.
* The phrases are a one-row TEMP table cross-joined in, not a list parameter: indexing a list
  parameter copies the whole list for every vector of rows.
* Lambdas compute integer indices only: DuckDB copies a lambda's captured columns per list
  element, so string work per token in a lambda costs several times what it costs per row.
* Hashes stay UBIGINT: mixing them with BIGINT or INTEGER operands widens to HUGEINT, several
  times slower, hence the casts.
* A macro argument is pasted wherever the macro uses it, so costly arguments (pow) are computed
  once into a column first.
* Looking phrases up is random access into a list of ~260k strings, the largest single cost:
  phrases of one length (3 words; 1-2 only to end a message) keep that working set small.
"""

import argparse
import random
import re
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb
import pandas as pd
from tqdm import tqdm

from spam_filter import constants, settings
from spam_filter.command_line import run_command_line, say_waiting
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.faults import crash_point
from spam_filter.storage import queries
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.factory import STORAGE_ERRORS, open_storage
from spam_filter.storage.postgres_storage import PostgresStorage

# Rows per INSERT statement: a multiple of DuckDB's row group (122,880 rows), the unit of parallel
# scans, so that both cores get equal work; small enough to bound one statement's memory.
_CHUNK_ROWS = 4 * 122_880
MAX_COUNT = 10**9
"""The most messages one call adds: far past any benchmark, with `created_at` times a millisecond
apart still in DuckDB's range (a count of 10^23 overflowed it)."""
# The columns PostgreSQL's messages table takes in bulk (its ids are its own).
_BULK_COPIED_MESSAGES = "SELECT spam, body, created_at, synthetic FROM messages"

# Words per phrase. Spans of 1..MAX_PHRASE_WORDS words are precomputed for every corpus position.
MAX_PHRASE_WORDS = 3

# Mis-decoded characters of spam.csv (UTF-8 once read as Latin-1), mapped back to what the phone
# showed, so generated text says "£5" rather than "å£5"; then HTML escapes.
_MOJIBAKE = {
    "å£": "£",
    "\x89Û÷": "\u2019",
    "åÕ": "\u2019",
    "\x89ÛÒ": "\u2014",
    "\x89Û_": "\u2026",
    "Ì_": "ü",
    "ÌÏ": "Ü",
    "&lt;": "<",
    "&gt;": ">",
    "&amp;": "&",
}

# spam.csv's anonymised placeholders, and what fills each: fixed per corpus position (a phrase
# through that position always shows the same value), plenty of variety for ~300 spots.
_PLACEHOLDER = re.compile(r"<(#|DECIMAL|TIME|URL|EMAIL)>")
_PLACEHOLDER_FILLERS = {
    "#": lambda rng: str(rng.randrange(1, 100)),
    "DECIMAL": lambda rng: f"{rng.randrange(1, 100)}.{rng.randrange(10, 100)}",
    "TIME": lambda rng: f"{rng.randrange(1, 13)}:{rng.randrange(10, 60)}",
    "URL": lambda rng: "www." + rng.choice(["fone", "txt", "mob", "win"]) + "4u.com",
    "EMAIL": lambda rng: rng.choice(["jo", "sam", "kay", "dev"]) + "@gmail.com",
}

# An insert keeps every block it writes cached (about 70 MB per million messages) until memory
# runs short; the cap keeps the script's memory flat. The connection is the script's own.
_LIMIT_MEMORY = "SET memory_limit = '256MB'"

# The phrases arrive as a registered frame: a list parameter of ~260k strings converts slowly.
_CREATE_WORDS_TABLE = """
    CREATE OR REPLACE TEMP TABLE realistic_message_words AS
    SELECT
        (SELECT list(phrase ORDER BY position) FROM realistic_phrase_frame) AS phrases,
        $lengths::UBIGINT[] AS lengths,
        $starts::UBIGINT[] AS starts,
        $ham_words::UBIGINT AS ham_words,
        $spam_base::UBIGINT AS spam_base,
        $phrase_words::UBIGINT AS phrase_words,
        $spam_words::UBIGINT AS spam_words,
        $ham_messages::UBIGINT AS ham_messages,
        $spam_messages::UBIGINT AS spam_messages
"""
_CREATE_OFFSETS_TABLE = """
    CREATE OR REPLACE TEMP TABLE realistic_message_offsets AS
    SELECT range AS j FROM range($rows)
"""

# Helpers as temporary macros: literal SQL, expanded inline. `t` is always one 64-bit hash; each
# helper reads its own bit ranges of it.
_MACROS = (
    # One of 95 two-letter syllables (19 consonants x 5 vowels). `substr` of a literal string
    # costs less per batch than indexing a literal list, which DuckDB re-materialises.
    """
    CREATE OR REPLACE TEMP MACRO realistic_syllable(d) AS substr(
        'babebibobucacecicocudadedidodufafefifofugagegigoguhahehihohujajejijojukakekikokulalelilo'
        || 'lumamemimomunaneninonupapepipopurarerirorusasesisosutatetitotuvavevivovuwawewiwowuyay'
        || 'eyiyoyuzazezizozu', (1 + 2 * d)::BIGINT, 2)
    """,
    """
    CREATE OR REPLACE TEMP MACRO realistic_capital_syllable(d) AS substr(
        'BaBeBiBoBuCaCeCiCoCuDaDeDiDoDuFaFeFiFoFuGaGeGiGoGuHaHeHiHoHuJaJeJiJoJuKaKeKiKoKuLaLeLiLo'
        || 'LuMaMeMiMoMuNaNeNiNoNuPaPePiPoPuRaReRiRoRuSaSeSiSoSuTaTeTiToTuVaVeViVoVuWaWeWiWoWuYaY'
        || 'eYiYoYuZaZeZiZoZu', (1 + 2 * d)::BIGINT, 2)
    """,
    """
    CREATE OR REPLACE TEMP MACRO realistic_emoji(d) AS
        ['😂', '😊', '😍', '👍', '🙏', '🎉', '💰', '🔥', '😘', '😭', '😁', '😉', '🙂', '💕', '😎',
         '🤣', '👌', '😅', '🥰', '😀', '😢', '😡', '🤔', '👋', '💯', '✨', '🎁', '📱', '⚽', '🍕',
         '❤️', '🙈'][(1 + d % 32)::BIGINT]
    """,
    # The long tail's rank: Pareto with shape 0.6 and scale 3000, from 53 bits of hash(t). The
    # number of distinct ranks among N draws grows like N^0.63, the Heaps'-law exponent of real
    # text; the scale sets how many show up early. Folded below 95^5 (five syllables).
    """
    CREATE OR REPLACE TEMP MACRO realistic_tail_rank(t) AS
        fmod(3000 * pow(((hash(t) >> 11) + 1) / 9007199254740992, -1 / 0.6), 7737809375)::BIGINT
    """,
    # Rank r spelled in base 95 after its lowest digit, one syllable per digit; with the lowest
    # digit's syllable in front, distinct ranks give distinct words ("bawo", "Sekiru", ...).
    """
    CREATE OR REPLACE TEMP MACRO realistic_word_rest(r) AS
        realistic_syllable(r // 95 % 95)
        || CASE WHEN r >= 9025 THEN realistic_syllable(r // 9025 % 95) ELSE '' END
        || CASE WHEN r >= 857375 THEN realistic_syllable(r // 857375 % 95) ELSE '' END
        || CASE WHEN r >= 81450625 THEN realistic_syllable(r // 81450625 % 95) ELSE '' END
    """,
    # A rare token of rank r: a Name (45%), a lower-case pseudo-word (35%) or a number (20%): a
    # count, a 1-4 digit number, a time, a price or a code like R836.
    """
    CREATE OR REPLACE TEMP MACRO realistic_tail_token(t, r) AS
        CASE
            WHEN t % 20 < 9 THEN realistic_capital_syllable(r % 95) || realistic_word_rest(r)
            WHEN t % 20 < 16 THEN realistic_syllable(r % 95) || realistic_word_rest(r)
            ELSE CASE (t >> 20) % 5
                WHEN 0 THEN ((t >> 24) % 100)::VARCHAR
                WHEN 1 THEN ((t >> 24) % 10000)::VARCHAR
                WHEN 2 THEN (1 + (t >> 24) % 12)::VARCHAR || ':'
                    || lpad(((t >> 40) % 60)::VARCHAR, 2, '0')
                    || ['', 'am', 'pm'][(1 + (t >> 46) % 3)::BIGINT]
                WHEN 3 THEN '£' || ((t >> 24) % 2000)::VARCHAR
                ELSE chr((65 + (t >> 24) % 26)::INTEGER) || ((t >> 40) % 1000)::VARCHAR
            END
        END
    """,
    # A typo at 0-based character m of x: a doubled, dropped or swapped letter (v = 0, 1, 2);
    # only doubling for one or two characters, which must not come out empty.
    """
    CREATE OR REPLACE TEMP MACRO realistic_typo_at(x, m, v) AS
        CASE
            WHEN v = 0 THEN left(x, m + 1) || substr(x, m + 1)
            WHEN v = 1 THEN left(x, m) || substr(x, m + 2)
            ELSE left(x, m) || substr(x, m + 2, 1) || substr(x, m + 1, 1) || substr(x, m + 3)
        END
    """,
    """
    CREATE OR REPLACE TEMP MACRO realistic_typo(x, t) AS
        realistic_typo_at(
            x,
            ((t >> 16) % greatest(length(x) - 1, 1)::UBIGINT)::BIGINT,
            CASE WHEN length(x) < 3 THEN 0 ELSE (t >> 26) % 3 END)
    """,
    # A web address with a power-law distributed domain and, half the time, a path.
    """
    CREATE OR REPLACE TEMP MACRO realistic_url(t) AS
        ['www.', 'http://www.', 'https://', 'http://'][(1 + t % 4)::BIGINT]
        || realistic_syllable((t >> 8) % 95) || realistic_word_rest(realistic_tail_rank(t))
        || ['.com', '.co.uk', '.net', '.biz', '.info', '.org'][(1 + (t >> 2) % 6)::BIGINT]
        || CASE WHEN (t >> 5) % 2 = 0 THEN ''
            ELSE '/' || realistic_syllable((t >> 16) % 95)
                || realistic_word_rest(realistic_tail_rank(hash(t))) END
    """,
)

# The (spam, body, created_at) rows numbered [chunk_start, chunk_stop), as a table macro, so that
# the INSERT below stays one whole literal. Salts xor-ed into the row hash `h`:
#   65536 + p      phrase p: where in the class's words it starts
#   131072 + f     row field f: model message, phrase size, tails, the alteration, extras
# `phrases` holds, for ham then spam, and within a class for k = 1..3, the k-word span starting at
# every position of the class's words: `base` is where the row's class and k begin, `size` the
# class's number of words. `lengths` and `starts` hold each corpus message's token count and first
# position (ham's, then spam's).
#
# A message is
#     [tail] opening  middle phrases...  [tail]  closing  [tail]  [call] [URL] [emoji]
# where the opening or the closing phrase may be altered, and the middle run is the one lambda.
# The opening is the start of a real message, the one whose length was drawn.
_CHUNK_MACRO = """
    CREATE OR REPLACE TEMP MACRO realistic_message_chunk(
        chunk_start, chunk_stop, chunk_seed, chunk_spam_share, chunk_newest, chunk_last
    ) AS TABLE
        WITH labelled AS (
            SELECT i, h, h % 10000 < chunk_spam_share * 10000 AS spam
            FROM (
                SELECT chunk_start + j AS i, hash(chunk_start + j, chunk_seed) AS h
                FROM realistic_message_offsets
                WHERE j < chunk_stop - chunk_start
            )
        ),
        modelled AS (
            -- `model`: the corpus message whose length and opening this one takes.
            SELECT
                i, h, spam, phrases, phrase_words, lengths[model] AS n, starts[model] AS opening,
                CASE WHEN spam THEN spam_words ELSE ham_words END AS size,
                CASE WHEN spam THEN spam_base ELSE 0 END AS class_base
            FROM (
                SELECT *, (CASE
                    WHEN spam THEN 1 + ham_messages + hash(xor(h, 131072)) % spam_messages
                    ELSE 1 + hash(xor(h, 131072)) % ham_messages
                END)::BIGINT AS model
                FROM labelled, realistic_message_words
            )
        ),
        shaped AS (
            -- w: words taken from phrases; n less about what tails (5%) and extras (~1 word in
            -- spam) add. k: words per phrase (`phrase_words`, at most w); m: phrases, the
            -- closing one of the remaining 1..k words, so that they hold w words in all.
            SELECT *, (w + k - 1) // k AS m, class_base + (k - 1) * size AS base
            FROM (
                SELECT *, least(w, phrase_words) AS k
                FROM (
                    SELECT *, greatest(1, n::BIGINT - (n::BIGINT + 10) // 20 - spam::BIGINT)
                        ::UBIGINT AS w
                    FROM modelled
                )
            )
        ),
        picked AS (
            SELECT
                i, h, spam, n,
                -- One-phrase messages of several words open like a real message only 30% of the
                -- time: the short messages of spam.csv ("Sorry, I'll call later") would repeat
                -- too often. One-word messages are real ones ("Ok...", "Yup"), 0.6% of rows.
                phrases[(1 + base + CASE
                    WHEN m = 1 AND k > 1 AND (hash(xor(h, 131079)) >> 32) % 10 < 7
                        THEN hash(xor(h, 131079)) % size
                    ELSE opening
                END)::BIGINT] AS opening,
                array_to_string(list_select(phrases,
                    list_transform(range(1, m::BIGINT - 1), lambda p:
                        (1 + base + hash(xor(h, 65536 + p::UBIGINT)) % size)::BIGINT)), ' ')
                    AS middle,
                CASE WHEN m > 1 THEN phrases[(
                    1 + class_base + (w + k - 1 - k * m) * size + hash(xor(h, 65535 + m)) % size
                )::BIGINT] END AS closing,
                -- Which of the two may be altered.
                m > 1 AND hash(xor(h, 131082)) % 2 = 0 AS closing_altered,
                -- Three rare tokens, each present with probability n/60 (5% of tokens): the
                -- rank of each that is present, NULL otherwise.
                CASE WHEN (hash(xor(h, 131080)) >> 32) % 1000 < 17 * n
                    THEN realistic_tail_rank(hash(xor(h, 131088))) END AS first_rank,
                CASE WHEN (hash(xor(h, 131081)) >> 32) % 1000 < 17 * n
                    THEN realistic_tail_rank(hash(xor(h, 131089))) END AS middle_rank,
                CASE WHEN (hash(xor(h, 131083)) >> 32) % 1000 < 17 * n
                    THEN realistic_tail_rank(hash(xor(h, 131090))) END AS last_rank
            FROM shaped
        ),
        altered AS (
            -- About half the time the opening or closing phrase is shouted (spam 20%, ham 4%),
            -- misspelt, or given punctuation or an emoji.
            SELECT *, CASE
                WHEN (hash(xor(h, 131082)) >> 32) % 1000
                        < CASE WHEN spam THEN 200 ELSE 40 END::UBIGINT
                    THEN upper(target)
                WHEN (hash(xor(h, 131082)) >> 32) % 1000 < 300
                    THEN realistic_typo(target, hash(xor(h, 131091)))
                WHEN (hash(xor(h, 131082)) >> 32) % 1000 < 450
                    THEN target || ['!', '!!', '?', '...', '.', ',', '!!!', '??']
                        [(1 + hash(xor(h, 131091)) % 8)::BIGINT]
                WHEN (hash(xor(h, 131082)) >> 32) % 1000
                        < CASE WHEN spam THEN 480 ELSE 520 END::UBIGINT
                    THEN target || ' ' || realistic_emoji(hash(xor(h, 131091)))
                ELSE target
            END AS altered
            FROM (
                SELECT *, CASE WHEN closing_altered THEN closing ELSE opening END AS target
                FROM picked
            )
        ),
        joined AS (
            -- concat_ws skips the NULL parts: absent tails and extras, empty runs of phrases.
            SELECT i, h, spam, concat_ws(' ',
                CASE WHEN first_rank IS NOT NULL
                    THEN realistic_tail_token(hash(xor(h, 131088)), first_rank) END,
                CASE WHEN closing_altered THEN opening ELSE altered END,
                nullif(middle, ''),
                CASE WHEN middle_rank IS NOT NULL
                    THEN realistic_tail_token(hash(xor(h, 131089)), middle_rank) END,
                CASE WHEN closing_altered THEN altered ELSE closing END,
                CASE WHEN last_rank IS NOT NULL
                    THEN realistic_tail_token(hash(xor(h, 131090)), last_rank) END,
                -- A quarter of spam ends with a call to action and a fresh premium-rate number.
                CASE WHEN spam AND hash(xor(h, 131074)) % 1000 < 250 THEN
                    ['Call', 'call', 'Txt', 'Ring', 'Call now on', 'or call', 'Call FREE on', 'tel']
                        [(1 + (hash(xor(h, 131074)) >> 10) % 8)::BIGINT]
                    || ' 0' || ['9', '8', '7'][(1 + (hash(xor(h, 131074)) >> 13) % 3)::BIGINT]
                    || lpad(((hash(xor(h, 131074)) >> 16) % 1000000000)::VARCHAR, 9, '0')
                END,
                -- A URL in 12% of spam and 1.5% of ham.
                CASE WHEN hash(xor(h, 131075)) % 1000 < CASE WHEN spam THEN 120 ELSE 15 END::UBIGINT
                    THEN realistic_url(hash(xor(h, 131075)) >> 10) END,
                -- One to three emoji at the end of 12% of ham and 4% of spam.
                CASE WHEN hash(xor(h, 131076)) % 1000 < CASE WHEN spam THEN 40 ELSE 120 END::UBIGINT
                    THEN repeat(realistic_emoji(hash(xor(h, 131076)) >> 10),
                        (1 + (hash(xor(h, 131076)) >> 20) % 3)::BIGINT)
                END
            ) AS body
            FROM altered
        )
        SELECT
            spam,
            body,
            chunk_newest - to_milliseconds(chunk_last - i) AS created_at
        FROM joined
"""
_INSERT_CHUNK = """
    INSERT INTO messages (spam, body, created_at, synthetic)
    SELECT spam, body, created_at, true
    FROM realistic_message_chunk($start, $stop, $seed, $spam_share, $newest::TIMESTAMP, $last)
"""


@dataclass(frozen=True)
class WordTables:
    """The per-class text statistics the generator samples from.

    `ham_words`/`spam_words` are each class's messages flattened into one list of whitespace
    tokens in file order: a word occurs as often as in the corpus, so a uniformly drawn position
    samples the class's word-frequency table, and a run of positions is a plausible phrase.
    `ham_lengths`/`spam_lengths` hold every message's token count: the length law.
    """

    ham_words: list[str]
    spam_words: list[str]
    ham_lengths: list[int]
    spam_lengths: list[int]

    def message_starts(self) -> list[int]:
        """Each message's first position in its class's words: ham's, then spam's."""
        starts: list[int] = []
        for lengths in (self.ham_lengths, self.spam_lengths):
            position = 0
            for length in lengths:
                starts.append(position)
                position += length
        return starts

    def phrases(self) -> list[str]:
        """Every span of 1..MAX_PHRASE_WORDS words, in the order the chunk macro indexes them.

        For ham then spam, for k = 1..MAX_PHRASE_WORDS, the k words from each position on,
        wrapping round at the end. Precomputed spans make the per-message lambdas run once per
        phrase instead of once per word.
        """
        spans: list[str] = []
        for words in (self.ham_words, self.spam_words):
            wrapped = words + words[: MAX_PHRASE_WORDS - 1]
            for k in range(1, MAX_PHRASE_WORDS + 1):
                spans.extend(" ".join(wrapped[p : p + k]) for p in range(len(words)))
        return spans

    def parameters(self) -> dict:
        """The values of the words table the chunk macro reads, but the phrases."""
        return {
            "lengths": self.ham_lengths + self.spam_lengths,
            "starts": self.message_starts(),
            "ham_words": len(self.ham_words),
            "spam_base": MAX_PHRASE_WORDS * len(self.ham_words),
            "phrase_words": MAX_PHRASE_WORDS,
            "spam_words": len(self.spam_words),
            "ham_messages": len(self.ham_lengths),
            "spam_messages": len(self.spam_lengths),
        }


def clean_text(text: str) -> str:
    """Undo spam.csv's mojibake and HTML escapes, so that generated messages read as SMS."""
    for broken, fixed in _MOJIBAKE.items():
        text = text.replace(broken, fixed)
    return text


# The pipeline's training split of the SMS collection with its default seed and test share: the
# same condition as the split's view (`spam_filter.assets.training`).
TRAINING_SPLIT_OF_COLLECTION = """
    SELECT spam, body
    FROM collection
    WHERE hash(body, $seed::INTEGER) % 1000000 >= $test_size::DOUBLE * 1000000
"""


@lru_cache(maxsize=4)
def build_word_tables(spam_csv_path: str) -> WordTables:
    """Flatten each class of spam.csv's training split into its token list and its list of
    message lengths."""
    collection = read_sms_spam_collection(spam_csv_path)
    with duckdb.connect() as conn:
        conn.register("collection", collection)
        training = conn.execute(
            TRAINING_SPLIT_OF_COLLECTION,
            {"seed": constants.SPLIT_SEED, "test_size": constants.TEST_SIZE},
        ).fetchall()
    words: dict[bool, list[str]] = {False: [], True: []}
    lengths: dict[bool, list[int]] = {False: [], True: []}
    rng = random.Random(0)  # fills the placeholders, the same way on every run
    for spam, body in training:
        filled = _PLACEHOLDER.sub(
            lambda match: _PLACEHOLDER_FILLERS[match.group(1)](rng), clean_text(body)
        )
        tokens = filled.split()
        if tokens:
            words[bool(spam)].extend(tokens)
            lengths[bool(spam)].append(len(tokens))
    return WordTables(words[False], words[True], lengths[False], lengths[True])


@lru_cache(maxsize=4)
def _word_tables(spam_csv_path: str) -> tuple[pd.DataFrame, dict]:
    """The phrases as a frame, and the other values of the words table."""
    tables = build_word_tables(spam_csv_path)
    phrases = tables.phrases()
    frame = pd.DataFrame({"position": range(len(phrases)), "phrase": phrases})
    return frame, tables.parameters()


def insert_sample_messages(
    storage: ApplicationStorage,
    count: int,
    seed: int = 0,
    spam_share: float = 0.3,
    progress: bool = True,
) -> int:
    """Insert `count` generated messages in one transaction and return how many were added.

    Row numbers continue after the rows already present, so a second run adds new messages; the
    same seed on the same number of existing rows gives the same messages. The messages are made
    by DuckDB's SQL, so for PostgreSQL they are made in a scratch DuckDB file and appended in one
    bulk copy.
    """
    if count < 0 or not 0 <= spam_share <= 1:
        raise ValueError("count must be non-negative and spam_share within [0, 1]")
    # Built before any transaction: the database stays free while spam.csv is read.
    words = _word_tables(str(settings.spam_csv_path()))
    if isinstance(storage, PostgresStorage):
        return _append_to_postgres(storage, words, count, seed, spam_share, progress)
    with storage.transaction() as conn:
        (first,) = conn.execute(queries.COUNT_MESSAGES).fetchone()
        _insert_chunks(conn, words, first, count, seed, spam_share, progress)
        crash_point("sample_data_inserted")
    crash_point("sample_data_committed")
    return count


def _append_to_postgres(
    storage: PostgresStorage,
    words: tuple[pd.DataFrame, dict],
    count: int,
    seed: int,
    spam_share: float,
    progress: bool,
) -> int:
    with (
        storage.appending_alone() as first,
        tempfile.TemporaryDirectory(prefix="spam_filter_sample_") as scratch,
    ):
        local = DuckDBStorage(Path(scratch) / "sample.duckdb")
        local.create_schema()
        with local.transaction() as conn:
            _insert_chunks(conn, words, first, count, seed, spam_share, progress)
        with local.connection(read_only=True) as conn:
            return storage.append_messages(conn.sql(_BULK_COPIED_MESSAGES).to_arrow_reader())


def _insert_chunks(
    conn: duckdb.DuckDBPyConnection,
    words: tuple[pd.DataFrame, dict],
    first: int,
    count: int,
    seed: int,
    spam_share: float,
    progress: bool,
) -> None:
    """Insert `count` messages numbered from `first` into `messages`, a chunk per statement."""
    if not count:
        return
    # The temporary tables and macros live as long as the connection, which is this run's own.
    conn.execute(_LIMIT_MEMORY)
    phrases, values = words
    conn.register("realistic_phrase_frame", phrases)
    try:
        conn.execute(_CREATE_WORDS_TABLE, values)
    finally:
        conn.unregister("realistic_phrase_frame")
    conn.execute(_CREATE_OFFSETS_TABLE, {"rows": min(count, _CHUNK_ROWS)})
    for statement in _MACROS:
        conn.execute(statement)
    conn.execute(_CHUNK_MACRO)
    newest = conn.execute("SELECT current_timestamp::TIMESTAMP").fetchone()[0]
    params = {"seed": seed, "spam_share": spam_share, "newest": newest, "last": first + count - 1}
    with tqdm(
        total=count, unit="msg", unit_scale=True, disable=not progress or count <= _CHUNK_ROWS
    ) as bar:
        for start in range(first, first + count, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, first + count)
            conn.execute(_INSERT_CHUNK, {**params, "start": start, "stop": stop})
            bar.update(stop - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Insert labelled sample messages.")
    parser.add_argument("--count", type=int, default=10_000, help="messages to add (10,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated messages")
    parser.add_argument("--spam-share", type=float, default=0.3, help="share of spam (0.3)")
    parser.add_argument(
        "--if-empty", action="store_true", help="only insert when `messages` has no rows"
    )
    parser.add_argument(
        "--database",
        help="a database file or postgresql:// URL (default: SPAM_FILTER_DATABASE_URL if set, "
        "else SPAM_FILTER_DATABASE)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.count <= MAX_COUNT or not 0 <= args.spam_share <= 1:
        parser.error(f"--count must be 0 to {MAX_COUNT:,}, and --spam-share between 0 and 1")
    return run_command_line(lambda: _insert(args), STORAGE_ERRORS)


def _insert(args: argparse.Namespace) -> int:
    storage = open_storage(args.database, on_wait=say_waiting)
    storage.create_schema()
    existing = storage.message_count()
    if args.if_empty and existing:
        print(f"messages already holds {existing:,} rows; nothing inserted")
        return 0
    added = insert_sample_messages(storage, args.count, args.seed, args.spam_share)
    print(f"inserted {added:,} sample messages; messages now holds {existing + added:,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
