"""A run leaves hostile reporters out and flags them; honest ones stay in. Real DuckDB files."""

import duckdb

from spam_filter import settings
from spam_filter.datasets import read_sms_spam_collection
from spam_filter.reporter_keys import key_hash
from spam_filter.storage.duckdb_storage import DuckDBStorage
from spam_filter.storage.records import Report
from spam_filter_tests.helpers import materialize_all, spelled

CAMPAIGN = "Hi {}, your parcel is on hold. Release it today at pkg-{}.help"


def _spam_model_metadata(result) -> dict:
    events = result.asset_materializations_for_node("spam_model")
    event = next(e for e in events if e.asset_key.to_user_string() == "spam_model")
    return {key: value.value for key, value in event.metadata.items()}


def test_a_reporter_outvoted_on_what_can_be_checked_is_left_out(resources, app_db):
    storage = DuckDBStorage(app_db)
    honest = [storage.add_reporter(f"honest {i}", key_hash(f"h{i}")) for i in range(3)]
    attacker = storage.add_reporter("attacker", key_hash("a"))
    campaign = [CAMPAIGN.format(spelled(i), spelled(i * 7)) for i in range(30)]
    for reporter in honest:
        storage.record_reports(reporter, [Report(text, True) for text in campaign[:15]])
    storage.record_reports(attacker, [Report(text, False) for text in campaign])
    result = materialize_all(resources)
    assert result.success
    metadata = _spam_model_metadata(result)
    assert metadata["reporters_left_out"] == 1
    flags = {r.name: r for r in storage.reporters()}
    assert flags["attacker"].status == "flagged"
    assert "15 of its 15 checkable votes contradict" in flags["attacker"].flag_reason
    assert all(flags[f"honest {i}"].status == "active" for i in range(3))


def test_a_reporter_contradicting_the_collection_is_left_out(resources, app_db):
    storage = DuckDBStorage(app_db)
    frame = read_sms_spam_collection(str(settings.spam_csv_path()))
    rows = zip(frame["body"][:40], frame["spam"][:40], strict=True)
    flipped = [Report(body, not spam) for body, spam in rows]
    attacker = storage.add_reporter("flipper", key_hash("f"))
    storage.record_reports(attacker, flipped)
    assert materialize_all(resources).success
    (flipper,) = storage.reporters()
    assert flipper.status == "flagged" and "contradict the collection" in flipper.flag_reason


def test_an_honest_reporter_stays_in_and_a_later_clean_run_clears_an_old_flag(resources, app_db):
    storage = DuckDBStorage(app_db)
    reporter = storage.add_reporter("desk", key_hash("d"))
    storage.flag_reporter(reporter, "an old verdict")
    reports = [Report(f"team lunch {spelled(i)} at noon, see you there", False) for i in range(15)]
    reports += [Report(f"claim your {spelled(i)} prize now, text WIN", True) for i in range(15)]
    storage.record_reports(reporter, reports)
    result = materialize_all(resources)
    assert result.success
    assert _spam_model_metadata(result)["reporters_left_out"] == 0
    (desk,) = storage.reporters()
    assert desk.status == "active" and desk.flag_reason is None


def test_a_key_that_flips_everything_others_report_is_left_out_and_their_labels_return(
    resources, app_db
):
    storage = DuckDBStorage(app_db)
    honest = [storage.add_reporter(f"honest {i}", key_hash(f"h{i}")) for i in range(4)]
    attacker = storage.add_reporter("veto", key_hash("v"))
    for index, reporter in enumerate(honest):
        reports = [
            Report(f"parcel {spelled(index)} {spelled(i)} is held, pay the fee", True)
            for i in range(12)
        ]
        storage.record_reports(reporter, reports)
        # Every message the honest keys report, the attacker reports the other way: all ties.
        storage.record_reports(attacker, [Report(r.text, False) for r in reports])
    assert materialize_all(resources).success
    statuses = {r.name: r.status for r in storage.reporters()}
    assert statuses == {
        "honest 0": "active",
        "honest 1": "active",
        "honest 2": "active",
        "honest 3": "active",
        "veto": "flagged",
    }
    with duckdb.connect(resources["warehouse"].database, read_only=True) as conn:
        reported = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE spam) FROM public.user_messages "
            "WHERE source = 'reports'"
        ).fetchone()
    assert reported == (48, 48)  # the ties are gone with the attacker: the honest labels count
