"""Alembic environment: the URL comes from Settings (or the caller), the target from app.models."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool, text
from sqlmodel import SQLModel

from app import auth, models  # noqa: F401  (registers the tables)
from app.config import get_settings
from app.db import is_sqlite, postgres_connect_args
from app.sqlite import begin_transactions

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


LOCK_KEY = 0x78696E7A6869  # "xinzhi": the advisory lock that serialises migrations


def database_url() -> str:
    return config.attributes.get("database_url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = database_url()
    if is_sqlite(url):
        # One transaction holding the write lock from the start (SQLite's DDL is transactional
        # once the driver stops managing transactions), so a second process waits, then finds
        # the schema current: never half a migration, never two racing.
        engine = create_engine(url, poolclass=pool.NullPool, connect_args={"timeout": 60})
        begin_transactions(engine, "BEGIN IMMEDIATE")
    else:
        # As the app connects: the connect timeout and the session settings.
        connect_args = postgres_connect_args(get_settings())
        engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Several hosts may start at once: one migrates, the others wait here, then
                # find nothing left to do. Released when the transaction ends.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
