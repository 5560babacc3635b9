"""The schema's one authority, the Alembic migrations: applying them, and asking whether a
database is at their head, through Alembic's own API."""

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from app.config import ROOT
from app.db import ensure_sqlite_dir


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Brings the schema to `revision`; migrations are the only thing that creates tables."""
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def at_head(engine: Engine) -> bool:
    """Whether the database's schema is the newest migration's."""
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(False)))
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(script.get_heads())
