"""The command line: `python -m app serve | migrate | seed | export | import | keys`."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from app.auth import create_key, list_keys, revoke_key
from app.config import Settings, get_settings
from app.db import make_engine
from app.errors import BadRequest
from app.export import cities_export, indicators_export, observations_export
from app.imports import ImportRejected, apply_import
from app.pagination import split_codes
from app.queries import ObservationFilter
from app.schema import at_head, migrate
from app.seed import SeedError, is_empty, load_seed


def prepare_database(settings: Settings) -> None:
    """Migrates a database that is behind and seeds an empty one: what `serve` does once,
    before its workers start."""
    engine = make_engine(settings)
    try:
        if not at_head(engine):
            migrate(settings.database_url)
        if is_empty(engine):
            # A write engine, as for every write: on SQLite it takes the write lock before it
            # reads, so another instance seeding beside it makes it wait, not fail.
            writer = make_engine(settings, write=True)
            try:
                report = load_seed(writer, settings.seed_dir)
            finally:
                writer.dispose()
            print(f"seeded an empty database: {report.changed} rows", file=sys.stderr)
    finally:
        engine.dispose()


def _serve(args: argparse.Namespace) -> int:
    settings = get_settings()
    prepare_database(settings)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level,
        workers=args.workers or settings.workers,
        # asyncio's own loop, not uvloop: under saturation uvloop left a few connections
        # waiting over a second, where asyncio kept its p99 near its p50.
        loop="asyncio",
        ws="none",  # the API has no WebSocket route
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    migrate(get_settings().database_url, args.revision)
    print(f"database at {args.revision}", file=sys.stderr)
    return 0


def _seed(args: argparse.Namespace) -> int:
    settings = get_settings()
    # A write engine: on SQLite, BEGIN IMMEDIATE, so that beside a running app the seed waits
    # for the write lock before it reads, rather than failing when a write lands under it.
    engine = make_engine(settings, write=True)
    try:
        report = load_seed(engine, args.dir or settings.seed_dir)
    except SeedError as exc:
        print(f"seed failed: {exc}", file=sys.stderr)
        return 1
    for name, tally in report.files.items():
        print(
            f"{name}: {tally.added} added, {tally.updated} updated, {tally.unchanged} unchanged",
            file=sys.stderr,
        )
    return 0


def _export(args: argparse.Namespace) -> int:

    engine = make_engine(get_settings(), snapshot=True)
    filters = ObservationFilter(
        cities=split_codes(args.city),
        indicators=split_codes(args.indicator),
        dimensions=split_codes(args.dimension),
        year_from=args.year_from,
        year_to=args.year_to,
        latest=args.latest,
    )
    try:
        with Session(engine) as session:
            filters.check(session)
    except BadRequest as exc:
        print(f"export failed: {exc.detail}", file=sys.stderr)
        return 2
    if args.resource == "cities":
        export = cities_export()
    elif args.resource == "indicators":
        export = indicators_export(filters.dimensions)
    else:
        export = observations_export(filters)
    if args.output in (None, "-"):
        export.write(engine, sys.stdout.buffer, args.bom)
    else:
        with open(args.output, "wb") as out:
            export.write(engine, out, args.bom)
    return 0


def _keys(args: argparse.Namespace) -> int:
    engine = make_engine(get_settings(), write=True)
    if args.action == "create":
        try:
            key = create_key(engine, args.name, args.scope)
        except ValueError as exc:
            print(f"keys: {exc}", file=sys.stderr)
            return 1
        print(
            f"created {args.scope} key {args.name!r}; it is shown once, store it now:",
            file=sys.stderr,
        )
        print(key)
    elif args.action == "list":
        for k in list_keys(engine):
            state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
            print(
                f"{k.name}\t{k.scope}\txz_{k.prefix}_…\tcreated {k.created_at:%Y-%m-%d %H:%M}\t{state}"
            )
    elif not revoke_key(engine, args.name):
        print(f"keys: no active key named {args.name!r}", file=sys.stderr)
        return 1
    else:
        print(f"revoked {args.name!r}", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:

    settings = get_settings()
    engine = make_engine(settings, write=True)
    data = Path(args.file).read_bytes()
    try:
        with Session(engine) as session:
            report = apply_import(session, data, settings, args.actor, args.reason, args.dry_run)
    except ImportRejected as exc:
        print(f"import failed: {exc.detail}", file=sys.stderr)
        for e in exc.errors:
            print(f"  {args.file}:{e.line}: {e.column or '-'}: {e.msg}", file=sys.stderr)
        return 1
    verb = "would be" if report.dry_run else "were"
    print(
        f"{report.rows} rows: {report.added} {verb} added, {report.updated} updated, "
        f"{report.unchanged} unchanged",
        file=sys.stderr,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="Xinzhi Metrics 新质指标")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, seed an empty database, and serve with uvicorn")
    serve.add_argument("--host", help="default: HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: PORT or 8000")
    serve.add_argument(
        "--workers", type=int, help="worker processes (default: WORKERS or 1); see README"
    )
    serve.set_defaults(run=_serve)

    mig = sub.add_parser("migrate", help="apply the Alembic migrations")
    mig.add_argument("revision", nargs="?", default="head")
    mig.set_defaults(run=_migrate)

    seed = sub.add_parser("seed", help="load seed/*.csv (idempotent)")
    seed.add_argument("--dir", type=Path, help="seed folder (default: SEED_DIR or ./seed)")
    seed.set_defaults(run=_seed)

    export = sub.add_parser("export", help="write CSV to stdout or a file")
    export.add_argument(
        "resource",
        nargs="?",
        default="observations",
        choices=["observations", "cities", "indicators"],
    )
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    export.add_argument("--bom", action="store_true", help="start with a UTF-8 BOM for Excel")
    export.add_argument("--city", help="comma-separated city codes")
    export.add_argument("--indicator", help="comma-separated indicator codes")
    export.add_argument("--dimension", help="comma-separated dimension codes")
    export.add_argument("--year-from", type=int)
    export.add_argument("--year-to", type=int)
    export.add_argument("--latest", action="store_true")
    export.set_defaults(run=_export)
    keys = sub.add_parser("keys", help="create, list or revoke curators' API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", required=True, choices=["read", "write", "admin"])
    keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    keys.set_defaults(run=_keys)

    imp = sub.add_parser("import", help="import observations from CSV, all or nothing")
    imp.add_argument("file", help="a CSV with the columns of /observations.csv")
    imp.add_argument("--reason", required=True, help="why; kept in the history and audit log")
    imp.add_argument("--dry-run", action="store_true", help="count changes, write nothing")
    imp.add_argument("--actor", default="cli", help="name recorded as the writer (default: cli)")
    imp.set_defaults(run=_import)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except OperationalError as error:
        # A database that cannot be reached or used (down, timed out, refused): say so, with
        # the driver's own message, not a traceback.
        print(f"error: the database is unavailable: {error.orig}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
