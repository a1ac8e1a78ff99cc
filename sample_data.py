"""Insert labelled synthetic messages into the application database, for load tests and benchmarks.

The rows are marked `synthetic`: they never count in the model's gold metrics.

Messages are built inside DuckDB from spammy and innocuous templates, chosen by a seeded hash of
the row number, so ten million rows take seconds and the same seed gives the same messages. All
rows go in as one transaction: an interrupted run leaves the table as it was.
"""

import argparse
from pathlib import Path

from tqdm import tqdm

from spam_filter.faults import crash_point
from spam_filter.storage import queries
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.factory import open_storage

SPAM_OPENERS = [
    "WINNER!",
    "URGENT:",
    "Congratulations!",
    "FREE entry:",
    "You have been selected:",
    "Final notice:",
    "Exclusive offer:",
    "Claim now:",
]
SPAM_OFFERS = [
    "you won a £1000 cash prize",
    "your free iPhone is waiting",
    "a guaranteed loan of $5000",
    "a free holiday for two",
    "2 free tickets to the cup final",
    "a £500 gift voucher",
    "100% free ringtones every week",
    "cash bonus credited to your account",
]
SPAM_CALLS = [
    "call now on 09061701461",
    "text WIN to 87121",
    "reply YES to claim",
    "visit www.win-big.example to collect",
    "txt STOP to opt out, 150p/msg",
    "claim before midnight!",
    "call 0800 555 0199 now",
    "click the link to verify",
]
HAM_OPENERS = [
    "Hi,",
    "Hey",
    "Morning!",
    "Quick one:",
    "Thanks for today.",
    "Sorry,",
    "FYI",
    "Ok so",
]
HAM_TOPICS = [
    "the meeting moved to 3pm",
    "can we go over the schedule tomorrow",
    "lunch at the usual place",
    "I will send the report tonight",
    "the kids are at football until six",
    "did you see the notes from the review",
    "running ten minutes late",
    "dinner is in the fridge",
]
HAM_CLOSERS = [
    "see you soon",
    "talk later",
    "let me know",
    "cheers",
    "thanks!",
    "love you",
    "no rush",
    "bring the charger please",
]

_CHUNK_ROWS = 500_000

# One 64-bit hash of (row number, seed) per row; separate bit ranges of it choose the label and
# each template part. (Hashing (row, seed, part) instead would not do: DuckDB combines the hashes
# of several arguments so that their low bits agree, and every row would pick matching parts.)
_INSERT_CHUNK = """
    INSERT INTO messages (spam, body, created_at, synthetic)
    SELECT
        spam,
        CASE WHEN spam THEN
            $spam_openers[(1 + (h >> 16) % len($spam_openers))::BIGINT] || ' '
            || $spam_offers[(1 + (h >> 32) % len($spam_offers))::BIGINT] || ', '
            || $spam_calls[(1 + (h >> 48) % len($spam_calls))::BIGINT]
        ELSE
            $ham_openers[(1 + (h >> 16) % len($ham_openers))::BIGINT] || ' '
            || $ham_topics[(1 + (h >> 32) % len($ham_topics))::BIGINT] || ', '
            || $ham_closers[(1 + (h >> 48) % len($ham_closers))::BIGINT]
        END,
        $newest::TIMESTAMP - to_milliseconds($last - i),
        true
    FROM (
        SELECT i, h, h % 10000 < $spam_share * 10000 AS spam
        FROM (SELECT i, hash(i, $seed) AS h FROM range($start, $stop) AS rows(i))
    )
"""


def insert_sample_messages(
    storage: DuckDBStorage,
    count: int,
    seed: int = 0,
    spam_share: float = 0.3,
    progress: bool = True,
) -> int:
    """Insert `count` generated messages in one transaction and return how many were added.

    Row numbers continue after the rows already present, so a second run adds new messages.
    """
    if count < 0 or not 0 <= spam_share <= 1:
        raise ValueError("count must be non-negative and spam_share within [0, 1]")
    with storage.transaction() as conn:
        (first,) = conn.execute(queries.COUNT_MESSAGES).fetchone()
        _insert_chunks(conn, first, count, seed, spam_share, progress)
        crash_point("sample_data_inserted")
    crash_point("sample_data_committed")
    return count


def _insert_chunks(conn, first: int, count: int, seed: int, spam_share: float, progress: bool):
    newest = conn.execute("SELECT current_timestamp::TIMESTAMP").fetchone()[0]
    params = {
        "seed": seed,
        "spam_share": spam_share,
        "newest": newest,
        "last": first + count - 1,
        "spam_openers": SPAM_OPENERS,
        "spam_offers": SPAM_OFFERS,
        "spam_calls": SPAM_CALLS,
        "ham_openers": HAM_OPENERS,
        "ham_topics": HAM_TOPICS,
        "ham_closers": HAM_CLOSERS,
    }
    with tqdm(
        total=count, unit="msg", unit_scale=True, disable=not progress or count <= _CHUNK_ROWS
    ) as bar:
        for start in range(first, first + count, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, first + count)
            conn.execute(_INSERT_CHUNK, {**params, "start": start, "stop": stop})
            bar.update(stop - start)


def main() -> None:
    parser = argparse.ArgumentParser(description="Insert labelled sample messages.")
    parser.add_argument("--count", type=int, default=10_000, help="messages to add (10,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the choice of templates")
    parser.add_argument("--spam-share", type=float, default=0.3, help="share of spam (0.3)")
    parser.add_argument(
        "--if-empty", action="store_true", help="only insert when `messages` has no rows"
    )
    parser.add_argument(
        "--database", type=Path, help="database file (default: SPAM_FILTER_DATABASE)"
    )
    args = parser.parse_args()
    storage = open_storage(args.database)
    storage.create_schema()
    existing = storage.message_count()
    if args.if_empty and existing:
        print(f"messages already holds {existing:,} rows; nothing inserted")
        return
    added = insert_sample_messages(storage, args.count, args.seed, args.spam_share)
    print(f"inserted {added:,} sample messages; messages now holds {existing + added:,} rows")


if __name__ == "__main__":
    main()
