"""The application database's command line.

    python database.py                       create the tables (idempotent) and print them
    python database.py add-reporter NAME     create a reporter; prints its key on the last line
    python database.py reporters             list reporters with their reports and status
    python database.py revoke-reporter NAME  revoke a reporter's key
    python database.py models                list every model, its rates and the decision
    python database.py rollback [MODEL]      make the previous (or the named) model active again

The schema, the queries and the transactions live in `spam_filter.storage`; this script only
calls them.
"""

import argparse
import sys
from pathlib import Path

from spam_filter import settings
from spam_filter.command_line import run_command_line, say_waiting
from spam_filter.reporter_keys import key_hash, new_key
from spam_filter.rollback import RollbackRefused, roll_back
from spam_filter.storage.base import ApplicationStorage
from spam_filter.storage.factory import STORAGE_ERRORS, open_storage
from spam_filter.storage.records import ModelRecord, ReporterExists

MAX_REPORTER_NAME_CHARACTERS = 100


def reporter_name(text: str) -> str:
    """A reporter's name as given on the command line: printable, and short enough to list."""
    name = text.strip()
    if not name or not name.isprintable() or len(name) > MAX_REPORTER_NAME_CHARACTERS:
        raise argparse.ArgumentTypeError(
            f"a name is 1 to {MAX_REPORTER_NAME_CHARACTERS} printable characters, not {text!r}"
        )
    return name


def bootstrap(storage: ApplicationStorage, _: argparse.Namespace) -> int:
    storage.create_schema()
    renamed = storage.relativize_model_paths(settings.weights_dir())
    if renamed:
        print(f"{renamed} weights path(s) rewritten relative to {settings.weights_dir()}")
    print(f"database {storage}\n{storage.describe()}")
    return 0


def add_reporter(storage: ApplicationStorage, args: argparse.Namespace) -> int:
    storage.create_schema()
    key = new_key()
    try:
        storage.add_reporter(args.name, key_hash(key))
    except ReporterExists as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"reporter {args.name!r} created. Its key, shown only now (send it as `Authorization:")
    print("Bearer <key>` to POST /api/report; only its hash is stored):")
    print(key)
    return 0


def list_reporters(storage: ApplicationStorage, _: argparse.Namespace) -> int:
    storage.create_schema()
    storage.drain_reports()
    reporters = storage.reporters()
    if not reporters:
        print("no reporters yet: create one with `python database.py add-reporter NAME`")
        return 0
    width = max(len(reporter.name) for reporter in reporters)
    print(f"{'name':<{width}}  {'reports':>9}  {'status':<8}  created            note")
    for reporter in reporters:
        note = reporter.flag_reason or ""
        created = reporter.created_at.strftime("%Y-%m-%d %H:%M")
        line = f"{reporter.name:<{width}}  {reporter.reports:>9,}  {reporter.status:<8}  "
        print(f"{line}{created:<17}  {note}".rstrip())
    return 0


def revoke_reporter(storage: ApplicationStorage, args: argparse.Namespace) -> int:
    storage.create_schema()
    if not storage.revoke_reporter(args.name):
        print(f"error: no active reporter named {args.name!r}", file=sys.stderr)
        return 1
    print(f"reporter {args.name!r} revoked; API servers refuse its key within seconds")
    return 0


def list_models(storage: ApplicationStorage, args: argparse.Namespace) -> int:
    storage.create_schema()
    history = storage.model_history()
    if not history:
        print("no model recorded yet: run create_spam_model_job")
        return 0
    kept_in_rows = storage.paths_with_weights() if storage.keeps_weights else set()
    print(f"{'created':<16}  {'status':<8}  {'gold TPR':>8}  {'gold FPR':>8}  model")
    for record in history:
        name = Path(record.path).name if record.path else "(no file: not promoted)"
        kept = _has_weights(storage, record, kept_in_rows)
        gone = " (weights deleted)" if record.path and not kept else ""
        print(
            f"{record.created_at:%Y-%m-%d %H:%M}  {record.status:<8}  "
            f"{record.true_positive_rate:>8.4f}  {record.false_positive_rate:>8.2%}  {name}{gone}"
        )
        print(f"{'':<18}{record.reason}")
    return 0


def _has_weights(storage: ApplicationStorage, record: ModelRecord, kept_in_rows: set[str]) -> bool:
    """Whether the model's weights are still there to roll back to: in its row (`kept_in_rows`
    lists those) or in its file. A rejected model never had any."""
    if not record.path:
        return False
    if storage.keeps_weights:
        return record.path in kept_in_rows
    return (settings.weights_dir() / Path(record.path).name).exists()


def rollback(storage: ApplicationStorage, args: argparse.Namespace) -> int:
    try:
        target, replaced = roll_back(storage, settings.weights_dir(), args.model)
    except RollbackRefused as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    replaced_name = Path(replaced.path).name if replaced else "no model"
    print(
        f"{Path(target.path).name} is active again, in place of {replaced_name}; API servers "
        "serve it within seconds"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Manage the application database.")
    parser.add_argument(
        "--database",
        help="database file or postgresql:// URL (default: SPAM_FILTER_DATABASE_URL, else "
        "SPAM_FILTER_DATABASE)",
    )
    parser.set_defaults(command=bootstrap)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add = commands.add_parser("add-reporter", help="create a reporter and print its new key")
    add.add_argument("name", type=reporter_name)
    add.set_defaults(command=add_reporter)
    listing = commands.add_parser("reporters", help="list reporters, their reports and status")
    listing.set_defaults(command=list_reporters)
    revoke = commands.add_parser("revoke-reporter", help="revoke a reporter's key")
    revoke.add_argument("name", help="the name exactly as `reporters` lists it")
    revoke.set_defaults(command=revoke_reporter)
    models = commands.add_parser("models", help="list every model, its rates and the decision")
    models.set_defaults(command=list_models)
    back = commands.add_parser("rollback", help="make the previous (or the named) model active")
    back.add_argument("model", nargs="?", help="a retired model's file name (default: previous)")
    back.set_defaults(command=rollback)
    args = parser.parse_args(argv)
    return run_command_line(
        lambda: args.command(open_storage(args.database, on_wait=say_waiting), args),
        STORAGE_ERRORS,
    )


if __name__ == "__main__":
    sys.exit(main())
