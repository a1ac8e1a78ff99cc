"""The storage contract, on every backend: the same tests against a DuckDB file and a real
PostgreSQL server (the `storage` fixture runs each test once per backend)."""

import threading
from collections.abc import Callable
from dataclasses import replace

import pytest

from spam_filter import weights
from spam_filter.reporter_keys import key_hash
from spam_filter.spam import train_model
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.records import (
    ActiveModelChanged,
    Report,
    ReporterExists,
    ReportOutcome,
)
from spam_filter_tests.helpers import model_record, spelled

HOSTILE_TEXTS = [
    "'; DROP TABLE messages; --",
    "Robert'); DELETE FROM models WHERE ('1'='1",
    '" OR 1=1 --',
    "$1 $seed ? ?? :name @x %s %(body)s {body} {0}",
    "1; ATTACH '/etc/passwd' AS p; SELECT * FROM p",
    "back\\slash \\' and a quote''",
    "UNION SELECT path, status FROM models /* comment */",
    "E'\\x27' $$ dollar $$ quoted $tag$ body $tag$",
    "COPY messages TO PROGRAM 'rm -rf /'",
    "''''",
]


def _active_paths(storage: ApplicationStorage) -> list[str]:
    return [r.path for r in storage.model_history() if r.status == "active"]


def _rows(storage: ApplicationStorage, query: str) -> list[tuple]:
    with storage.connection(read_only=True) as conn:
        return conn.execute(query).fetchall()


def test_create_schema_is_idempotent_and_keeps_rows(storage):
    storage.insert_messages([(True, "win cash"), (False, "lunch?")])
    storage.create_schema()
    assert storage.message_count() == 2
    assert sorted(_rows(storage, "SELECT spam, body FROM messages")) == [
        (False, "lunch?"),
        (True, "win cash"),
    ]


def test_describe_counts_rows_exactly(storage):
    storage.insert_messages([(True, "a"), (False, "b"), (False, "c")])
    with storage.connection() as conn:
        conn.execute("DELETE FROM messages WHERE body = 'a'")
    description = storage.describe()
    assert "messages (2 rows)" in description
    assert "models (0 rows)" in description


def test_first_promotion_makes_the_model_active(storage):
    storage.promote_model(model_record("a.json"), replacing=None)
    assert storage.active_model().path == "a.json"


def test_promotion_leaves_exactly_one_active_model(storage):
    storage.promote_model(model_record("a.json"), replacing=None)
    storage.promote_model(model_record("b.json"), replacing="a.json")
    storage.promote_model(model_record("c.json"), replacing="b.json")
    assert _active_paths(storage) == ["c.json"]
    assert [r.path for r in storage.model_history()] == ["c.json", "b.json", "a.json"]


def test_failure_between_retiring_and_inserting_keeps_the_previous_model(storage):
    storage.promote_model(model_record("a.json"), replacing=None)
    # The UPDATE that retires a.json succeeds; the INSERT then violates the rate's CHECK.
    with pytest.raises(Exception, match="(?i)constraint|check"):
        storage.promote_model(model_record("bad.json", tpr=1.5), replacing="a.json")
    assert _active_paths(storage) == ["a.json"]


def test_promotion_refuses_when_another_run_promoted_meanwhile(storage):
    storage.promote_model(model_record("a.json"), replacing=None)
    storage.promote_model(model_record("b.json"), replacing="a.json")
    with pytest.raises(ActiveModelChanged):
        storage.promote_model(model_record("c.json"), replacing="a.json")
    with pytest.raises(ActiveModelChanged):
        storage.promote_model(model_record("d.json"), replacing=None)
    assert _active_paths(storage) == ["b.json"]


def _race(names: list[str], make_active: Callable[[str], None]) -> dict[str, str]:
    """Call `make_active(name)` for every name at once, each from its own thread; the outcome of
    each: 'active', 'refused' (ActiveModelChanged) or 'failed: ...'."""
    start = threading.Barrier(len(names))
    outcomes: dict[str, str] = {}

    def attempt(name: str) -> None:
        start.wait()
        try:
            make_active(name)
            outcomes[name] = "active"
        except ActiveModelChanged:
            outcomes[name] = "refused"
        except Exception as error:  # noqa: BLE001 - the tests name what they accept
            outcomes[name] = f"failed: {type(error).__name__}"

    threads = [threading.Thread(target=attempt, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def _assert_one_winner_and_clean_refusals(
    storage: ApplicationStorage, outcomes: dict[str, str]
) -> None:
    """One caller won, and every other was told the active model changed (a run then reports
    "not promoted"). On PostgreSQL the promotion lock must make it so: without it a loser met the
    one-active index (UniqueViolation), which fails the run. Threads of one process share one
    DuckDB database, which aborts a conflicting transaction instead, changing nothing; processes,
    as runs are, take turns on its file lock."""
    winners = [name for name, outcome in outcomes.items() if outcome == "active"]
    assert len(winners) == 1, outcomes
    assert _active_paths(storage) == winners
    accepted = {"refused"}
    if isinstance(storage, DuckDBStorage):
        accepted.add("failed: TransactionException")
    assert {outcomes[name] for name in outcomes if name not in winners} <= accepted, outcomes


# Races are repeated: one round may see no overlap at all.
RACE_ROUNDS = 5


def test_promotions_racing_from_threads_leave_one_winner(storage):
    active = None
    for round_ in range(RACE_ROUNDS):
        base = f"base{round_}.json"
        storage.promote_model(model_record(base), replacing=active)
        outcomes = _race(
            [f"m{round_}_{i}.json" for i in range(4)],
            lambda name, base=base: storage.promote_model(model_record(name), replacing=base),
        )
        _assert_one_winner_and_clean_refusals(storage, outcomes)
        (active,) = _active_paths(storage)


def test_rejected_models_are_recorded_without_changing_the_active_one(storage):
    storage.promote_model(model_record("a.json"), replacing=None)
    storage.record_rejected_model(model_record("b.json"))
    statuses = {r.path: r.status for r in storage.model_history()}
    assert statuses == {"a.json": "active", "b.json": "rejected"}


def test_recorded_paths_are_every_row_with_a_file(storage):
    storage.promote_model(model_record("a.json"), replacing=None)
    storage.promote_model(model_record("b.json"), replacing="a.json")
    storage.record_rejected_model(model_record(None))
    assert sorted(storage.recorded_model_paths()) == ["a.json", "b.json"]


def test_weights_are_kept_with_the_row_where_the_backend_keeps_them(storage):
    weights = '{"spam_bow": {"win": 0.5}, "non_spam_bow": {"hi": 0.5}, "percent_spam": 0.1}'
    newer = weights.replace("0.5", "0.4")
    # The pipeline passes weights only to a backend that keeps them; DuckDB's are in files.
    keeps = storage.keeps_weights
    storage.promote_model(
        model_record("a.json"), replacing=None, weights=weights if keeps else None
    )
    storage.promote_model(
        model_record("b.json"), replacing="a.json", weights=newer if keeps else None
    )
    found = storage.active_model_weights()
    if keeps:
        record, stored = found
        assert (record.path, record.status, stored) == ("b.json", "active", newer)
    else:
        assert found is None
    storage.record_rejected_model(model_record("c.json"))
    assert storage.paths_with_weights() == ({"a.json", "b.json"} if keeps else set())
    assert storage.clear_old_retired_weights(keep=0) == (["a.json"] if keeps else [])
    assert storage.paths_with_weights() == ({"b.json"} if keeps else set())


def test_reporters_are_created_once_and_revoked(storage):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    storage.add_reporter("bob", key_hash("key-b"))
    with pytest.raises(ReporterExists):
        storage.add_reporter("alice", key_hash("key-c"))
    assert set(storage.reporter_keys()) == {key_hash("key-a"), key_hash("key-b")}
    assert storage.revoke_reporter("alice") is True
    assert storage.revoke_reporter("alice") is False
    assert storage.revoke_reporter("nobody") is False
    assert set(storage.reporter_keys()) == {key_hash("key-b")}
    statuses = {reporter.name: reporter.status for reporter in storage.reporters()}
    assert statuses == {"alice": "revoked", "bob": "active"}
    storage.flag_reporter(alice, "made the model worse")
    flagged = {reporter.name: reporter.flag_reason for reporter in storage.reporters()}
    assert flagged["alice"] == "made the model worse"
    storage.record_reporter_impacts({alice: None})
    assert {r.name: r.flag_reason for r in storage.reporters()}["alice"] is None


def test_one_vote_per_reporter_and_message(storage):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    bob = storage.add_reporter("bob", key_hash("key-b"))
    assert storage.record_reports(
        alice, [Report("Win cash", True), Report("win  CASH", True), Report("hi", False, "m1")]
    ) == ReportOutcome(accepted=2, duplicates=1)
    # Another reporter's vote on the same message is a vote of its own.
    assert storage.record_reports(bob, [Report("Win cash", True)]) == ReportOutcome(1, 0)
    # A changed label replaces the reporter's earlier vote; the same label is a duplicate.
    assert storage.record_reports(alice, [Report("hi", True, "m1")]) == ReportOutcome(1, 0)
    assert storage.record_reports(alice, [Report("hi", True, "m1")]) == ReportOutcome(0, 1)
    assert storage.report_sequence() == 4
    storage.drain_reports()
    rows = _rows(
        storage,
        "SELECT reporter_id, message_id, body, spam FROM reports ORDER BY reporter_id, body",
    )
    assert rows == [
        (alice, None, "Win cash", True),
        (alice, "m1", "hi", True),
        (bob, None, "Win cash", True),
    ]
    assert {r.name: r.reports for r in storage.reporters()} == {"alice": 2, "bob": 1}


def test_a_request_that_changes_its_mind_keeps_its_last_label(storage):
    alice = storage.add_reporter("alice", key_hash("key-a"))
    outcome = storage.record_reports(
        alice, [Report("x", True, "m1"), Report("y", False, "m2"), Report("x", False, "m1")]
    )
    assert outcome == ReportOutcome(accepted=3, duplicates=0)
    storage.drain_reports()
    assert sorted(_rows(storage, "SELECT message_id, spam FROM reports")) == [
        ("m1", False),
        ("m2", False),
    ]


def test_reports_from_many_threads_are_each_stored_once(storage):
    reporters = [storage.add_reporter(f"r{i}", key_hash(f"k{i}")) for i in range(3)]
    # Every thread sends the same messages in its own order: the rows' locks are taken in
    # opposite orders, which must not lose or double a vote.
    texts = [f"shared message {spelled(i)}" for i in range(40)]
    outcomes: list[ReportOutcome] = []
    lock = threading.Lock()

    def send(thread: int) -> None:
        reporter = reporters[thread % len(reporters)]
        order = texts if thread % 2 else list(reversed(texts))
        for start in range(0, len(order), 10):
            outcome = storage.record_reports(
                reporter, [Report(text, True) for text in order[start : start + 10]]
            )
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    storage.drain_reports()
    assert sum(o.accepted for o in outcomes) == len(reporters) * len(texts)
    assert sum(o.duplicates for o in outcomes) == len(reporters) * len(texts)
    assert _rows(storage, "SELECT count(*), count(DISTINCT body) FROM reports") == [
        (len(reporters) * len(texts), len(texts))
    ]
    assert storage.report_sequence() == len(reporters) * len(texts)


def test_hostile_messages_are_stored_and_read_back_verbatim(storage):
    storage.insert_messages([(True, text) for text in HOSTILE_TEXTS])
    stored = [body for (body,) in _rows(storage, "SELECT body FROM messages")]
    assert sorted(stored) == sorted(HOSTILE_TEXTS)
    assert storage.message_count() == len(HOSTILE_TEXTS)
    assert "models (0 rows)" in storage.describe()


def test_hostile_reporters_reports_and_models_round_trip_verbatim(storage):
    name = "'; DROP TABLE reports; --"
    reporter = storage.add_reporter(name, key_hash(name))
    reports = [Report(text, True, message_id=text) for text in HOSTILE_TEXTS]
    assert storage.record_reports(reporter, reports).accepted == len(HOSTILE_TEXTS)
    storage.drain_reports()
    stored = _rows(storage, "SELECT body, message_id FROM reports")
    assert sorted(stored) == sorted((text, text) for text in HOSTILE_TEXTS)
    assert [r.name for r in storage.reporters()] == [name]
    assert storage.reporter_keys()[key_hash(name)].name == name
    storage.flag_reporter(reporter, HOSTILE_TEXTS[1])
    assert storage.reporters()[0].flag_reason == HOSTILE_TEXTS[1]
    assert storage.revoke_reporter(name) is True
    storage.promote_model(model_record(HOSTILE_TEXTS[0]), replacing=None, weights=HOSTILE_TEXTS[2])
    storage.promote_model(model_record(HOSTILE_TEXTS[6]), replacing=HOSTILE_TEXTS[0])
    assert storage.active_model().path == HOSTILE_TEXTS[6]
    assert sorted(storage.recorded_model_paths()) == sorted([HOSTILE_TEXTS[0], HOSTILE_TEXTS[6]])
    assert storage.message_count() == 0


def _weights(storage: ApplicationStorage, name: str) -> str | None:
    """Where the backend keeps weights with the row, a row's own (the JSON names the model)."""
    return f'{{"model": "{name}"}}' if storage.keeps_weights else None


def _promote_in_turn(storage: ApplicationStorage, names: list[str]) -> None:
    """Promote each model after the previous one, each with its own weights."""
    previous = None
    for name in names:
        storage.promote_model(
            model_record(name), replacing=previous, weights=_weights(storage, name)
        )
        previous = name


def test_reactivating_makes_a_retired_model_active_in_place_of_the_current(storage):
    _promote_in_turn(storage, ["a.json", "b.json"])
    storage.reactivate_model("a.json", replacing="b.json")
    history = {r.path: r for r in storage.model_history()}
    assert _active_paths(storage) == ["a.json"]
    assert history["a.json"].retired_at is None
    assert history["b.json"].status == "inactive" and history["b.json"].retired_at is not None
    if storage.keeps_weights:
        assert storage.active_model_weights()[1] == '{"model": "a.json"}'


def test_reactivating_refuses_a_changed_active_model_or_an_unknown_one(storage):
    _promote_in_turn(storage, ["a.json", "b.json", "c.json"])
    with pytest.raises(ActiveModelChanged):
        storage.reactivate_model("a.json", replacing="b.json")
    with pytest.raises(ValueError, match="no retired model"):
        storage.reactivate_model("nothing.json", replacing="c.json")
    # Each refusal changed nothing.
    assert _active_paths(storage) == ["c.json"]
    assert {r.path: r.retired_at is None for r in storage.model_history()} == {
        "a.json": False,
        "b.json": False,
        "c.json": True,
    }


def test_rollbacks_racing_from_threads_leave_one_active_model(storage):
    active = None
    for round_ in range(RACE_ROUNDS):
        older, old, current = (f"{name}{round_}.json" for name in "abc")
        for name in (older, old, current):
            storage.promote_model(
                model_record(name), replacing=active, weights=_weights(storage, name)
            )
            active = name
        outcomes = _race(
            [older, old],
            lambda name, current=current: storage.reactivate_model(name, replacing=current),
        )
        _assert_one_winner_and_clean_refusals(storage, outcomes)
        (active,) = _active_paths(storage)


def test_only_the_last_retired_models_keep_weights_in_their_rows(storage):
    _promote_in_turn(storage, ["a.json", "b.json", "c.json", "d.json"])
    cleared = storage.clear_old_retired_weights(keep=1)
    if not storage.keeps_weights:
        # Weights live in files here: the rows hold none, and pruning deletes files instead.
        assert cleared == [] and storage.model_weights("a.json") is None
        return
    assert sorted(cleared) == ["a.json", "b.json"]
    assert storage.model_weights("a.json") is None
    assert storage.model_weights("c.json") == '{"model": "c.json"}'
    assert storage.active_model_weights()[1] == '{"model": "d.json"}'
    assert storage.clear_old_retired_weights(keep=1) == []
    # A row without weights can never become the model the API is told to serve.
    with pytest.raises(ValueError, match="cleared"):
        storage.reactivate_model("a.json", replacing="d.json")
    assert _active_paths(storage) == ["d.json"]
    storage.reactivate_model("c.json", replacing="d.json")
    assert _active_paths(storage) == ["c.json"]


def test_absolute_paths_in_the_weights_folder_become_bare_names(storage, tmp_path):
    inside, elsewhere = str(tmp_path / "a.json"), "/elsewhere/b.json"
    storage.promote_model(model_record(inside), replacing=None)
    storage.record_rejected_model(replace(model_record(None), compared_with=inside))
    storage.promote_model(model_record(elsewhere), replacing=inside)
    assert storage.relativize_model_paths(tmp_path) == 1
    paths = {(r.path, r.compared_with) for r in storage.model_history()}
    assert paths == {("a.json", None), (None, "a.json"), (elsewhere, None)}
    assert storage.relativize_model_paths(tmp_path) == 0


def test_a_recorded_model_loads_from_where_the_backend_keeps_its_weights(storage, tmp_path):
    model = train_model([("win cash now", True), ("lunch at noon", False)], 1.0, 1.0)
    if storage.keeps_weights:
        name = weights.new_name()
        storage.promote_model(model_record(name), None, weights=weights.to_json(model.to_weights()))
    else:
        name = weights.write(model.to_weights(), tmp_path).name
        storage.promote_model(model_record(name), replacing=None)
    assert storage.load_model(name, tmp_path).to_weights() == model.to_weights()
    with pytest.raises((OSError, ValueError)):
        storage.load_model(weights.new_name(), tmp_path)
