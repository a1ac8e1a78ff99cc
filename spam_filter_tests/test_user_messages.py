"""Reports become user messages defensively: one vote per reporter, majority labels, a share cap."""

import dagster as dg
import duckdb

from spam_filter import checks
from spam_filter.assets import ingestion
from spam_filter.reporter_keys import key_hash
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.records import Report
from spam_filter.tables import ROW_COUNT
from spam_filter_tests.helpers import spelled


def _reporters(storage: DuckDBStorage, count: int) -> list[int]:
    return [storage.add_reporter(f"reporter {i}", key_hash(f"key {i}")) for i in range(count)]


def _user_messages(
    resources: dict, share: float = 0.2, seed: int = 0
) -> tuple[dg.ExecuteInProcessResult, list]:
    config = {"max_reporter_share": share, "sample_seed": seed}
    result = dg.materialize(
        [
            ingestion.user_reports,
            ingestion.user_messages,
            checks.check_user_messages_reporter_share,
            checks.check_user_messages_label_balance,
            checks.check_user_messages_flagged_reporters,
        ],
        resources=resources,
        run_config={"ops": {"user_messages": {"config": config}}},
    )
    with duckdb.connect(resources["warehouse"].database, read_only=True) as conn:
        rows = conn.execute(
            "SELECT body, spam, source, reporter_id, supporters, capped FROM public.user_messages "
            "ORDER BY body"
        ).fetchall()
    return result, rows


def test_labels_come_from_the_majority_of_distinct_reporters(resources, app_db):
    storage = DuckDBStorage(app_db)
    a, b, c = _reporters(storage, 3)
    storage.record_reports(a, [Report("win a prize", True), Report("lunch?", True)])
    storage.record_reports(b, [Report("WIN a prize!", True), Report("lunch?", False)])
    storage.record_reports(c, [Report("win a prize", False)])
    # One reporter's two ids for the same text count once: its latest label.
    storage.record_reports(c, [Report("see you", True, "m1")])
    storage.record_reports(c, [Report("see you", False, "m2")])
    _, rows = _user_messages(resources, share=1.0)
    labelled = {
        body.lower().rstrip("!"): (spam, supporters) for body, spam, _, _, supporters, _ in rows
    }
    assert labelled == {"win a prize": (True, 2), "see you": (False, 1)}  # "lunch?" is a tie


def test_a_message_supported_by_one_reporter_belongs_to_it(resources, app_db):
    storage = DuckDBStorage(app_db)
    a, b = _reporters(storage, 2)
    storage.record_reports(a, [Report("only mine", True), Report("ours", True)])
    storage.record_reports(b, [Report("ours", True)])
    _, rows = _user_messages(resources, share=1.0)
    owners = {body: reporter for body, _, _, reporter, _, _ in rows}
    assert owners == {"only mine": a, "ours": None}


def _one_loud_and_ten_honest_reporters(app_db: str) -> int:
    """A reporter with 100 messages only it reports, beside ten with 5 each; the loud one's id."""
    storage = DuckDBStorage(app_db)
    loud, *honest = _reporters(storage, 11)
    storage.record_reports(loud, [Report(f"flood {spelled(i)}", False) for i in range(100)])
    for index, reporter in enumerate(honest):
        storage.record_reports(
            reporter, [Report(f"honest {spelled(index)} {spelled(i)}", True) for i in range(5)]
        )
    return loud


def test_no_reporter_stands_behind_more_than_its_share(resources, app_db):
    loud = _one_loud_and_ten_honest_reporters(app_db)
    result, rows = _user_messages(resources, share=0.2)
    from_loud = [row for row in rows if row[3] == loud and not row[5]]
    # 50 honest messages: the loud reporter keeps k with k <= 0.2 * (50 + k), so 12; the other
    # 88 are marked capped, for the impact check to weigh but not to train on.
    assert len(from_loud) == 12
    assert len([row for row in rows if row[5]]) == 88
    assert len([row for row in rows if not row[5]]) == 62
    (materialization,) = result.asset_materializations_for_node("user_messages")
    assert materialization.metadata[ROW_COUNT].value == len(rows) == 150
    share = result.get_asset_check_evaluations()
    by_name = {check.check_name: check for check in share}
    reporter_share = by_name["check_user_messages_reporter_share"]
    assert reporter_share.passed
    assert reporter_share.metadata["largest_reporter"].value == "reporter 0"
    assert reporter_share.metadata["largest_share"].value == 12 / 62


def test_the_share_check_judges_by_the_share_the_run_allowed(resources, app_db):
    _one_loud_and_ten_honest_reporters(app_db)
    result, _ = _user_messages(resources, share=0.5)
    by_name = {check.check_name: check for check in result.get_asset_check_evaluations()}
    reporter_share = by_name["check_user_messages_reporter_share"]
    # The loud reporter keeps 50 beside the 50 honest messages: half, as this run allowed.
    assert reporter_share.metadata["largest_share"].value == 0.5
    assert reporter_share.metadata["max_reporter_share"].value == 0.5
    assert reporter_share.passed


def test_two_reporters_over_their_share_both_end_within_it(resources, app_db):
    loud = _one_loud_and_ten_honest_reporters(app_db)
    storage = DuckDBStorage(app_db)
    louder = storage.add_reporter("louder", key_hash("louder key"))
    storage.record_reports(louder, [Report(f"spam wave {spelled(i)}", True) for i in range(100)])
    result, rows = _user_messages(resources, share=0.2)
    trained_on = [row for row in rows if not row[5]]
    # Each keeps k with k <= 0.2 * (50 + 2k), so 16: each share counts against the total after
    # both are capped, not after its own excess alone is taken out (which left 37 each, 30%).
    assert [len([row for row in trained_on if row[3] == r]) for r in (loud, louder)] == [16, 16]
    assert len(trained_on) == 82
    by_name = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert by_name["check_user_messages_reporter_share"].passed


def test_reporters_alone_in_the_reports_keep_nothing_over_their_share():
    # Two reporters and nothing else: each is half of whatever is kept of them.
    assert ingestion.reporter_allowances({1: (40, 0), 2: (40, 0)}, 0, 0.3) == {1: 0, 2: 0}
    # Corroborated messages count toward the share, and toward the total as unowned ones:
    # 9 + 5 of 60 + 9 + 3 is 19%, and a tenth would be 20.5%.
    assert ingestion.reporter_allowances({1: (40, 5), 2: (3, 5)}, 60, 0.2) == {1: 9, 2: 3}
    assert ingestion.reporter_allowances({1: (40, 5)}, 0, 1.0) == {1: 40}


def test_the_cap_is_seeded_and_stable(resources, app_db):
    _one_loud_and_ten_honest_reporters(app_db)
    first = _user_messages(resources, share=0.2)[1]
    assert _user_messages(resources, share=0.2)[1] == first
    # Another seed keeps another selection of the loud reporter's messages.
    assert _user_messages(resources, share=0.2, seed=1)[1] != first


def test_revoked_reporters_votes_are_not_used(resources, app_db):
    storage = DuckDBStorage(app_db)
    a, b = _reporters(storage, 2)
    storage.record_reports(a, [Report("kept", True)])
    storage.record_reports(b, [Report("dropped", True)])
    storage.revoke_reporter("reporter 1")
    _, rows = _user_messages(resources, share=1.0)
    assert [body for body, *_ in rows] == ["kept"]


def test_one_sided_reports_warn(resources, app_db):
    storage = DuckDBStorage(app_db)
    (a,) = _reporters(storage, 1)
    storage.record_reports(a, [Report(f"spam {spelled(i)}", True) for i in range(20)])
    result, _ = _user_messages(resources, share=1.0)
    balance = {c.check_name: c for c in result.get_asset_check_evaluations()}[
        "check_user_messages_label_balance"
    ]
    assert not balance.passed and balance.severity == dg.AssetCheckSeverity.WARN
    assert balance.metadata["spam_share"].value == 1.0


def test_flagged_reporters_that_contribute_are_named(resources, app_db):
    storage = DuckDBStorage(app_db)
    a, b = _reporters(storage, 2)
    storage.record_reports(a, [Report("a message", True)])
    storage.record_reports(b, [Report("b message", False)])
    storage.flag_reporter(a, "made gold worse")
    result, _ = _user_messages(resources, share=1.0)
    flagged = {c.check_name: c for c in result.get_asset_check_evaluations()}[
        "check_user_messages_flagged_reporters"
    ]
    assert not flagged.passed
    assert flagged.metadata["flagged_reporters"].value == "reporter 0"


def test_texts_the_model_cannot_tell_apart_are_one_message(resources, app_db):
    storage = DuckDBStorage(app_db)
    (a,) = _reporters(storage, 1)
    outcome = storage.record_reports(
        a, [Report("Your code is 482913", False), Report("your CODE is 119034!", False)]
    )
    assert (outcome.accepted, outcome.duplicates) == (1, 1)
    assert len(_user_messages(resources, share=1.0)[1]) == 1
