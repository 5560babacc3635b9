"""One Settings object; every knob comes from the environment (or a .env file)."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface uvicorn binds to (HOST).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port uvicorn listens on (PORT).")
    database_url: str = Field(
        f"sqlite:///{ROOT / 'data' / 'xinzhi.db'}",
        description="SQLAlchemy URL (DATABASE_URL). Default: a SQLite file under data/.",
    )
    cors_origins: list[str] = Field(
        default=["*"], description="Origins allowed by CORS (CORS_ORIGINS, a JSON list)."
    )
    workers: int = Field(
        1,
        ge=1,
        description="uvicorn worker processes for `serve` (WORKERS). Migrations run once, "
        "before they start.",
    )
    threadpool_size: int = Field(
        8,
        ge=1,
        description="Worker threads for sync endpoints (THREADPOOL_SIZE). They share one GIL: "
        "under `make load` on 2 cores, 8 served 25% more than 40 and cut the p99 by 60%.",
    )
    db_pool_size: int | None = Field(
        None,
        ge=1,
        description="Connections kept open (DB_POOL_SIZE). Default: THREADPOOL_SIZE, so every "
        "request thread can hold one connection and the pool can never be exhausted.",
    )
    db_max_overflow: int = Field(
        20, ge=0, description="Extra connections for streamed exports (DB_MAX_OVERFLOW)."
    )
    db_pool_timeout: float = Field(
        30,
        gt=0,
        description="Seconds to wait for a pooled connection, and on SQLite for a write's "
        "turn at the one writer (DB_POOL_TIMEOUT; 503 after).",
    )
    db_connect_timeout: int = Field(
        5,
        ge=2,
        description="Seconds to wait for a new connection to a database server "
        "(DB_CONNECT_TIMEOUT; 503 after). psycopg's own default is 130 s, which a hung server "
        "or a black-holed route would make each request wait; it takes no less than 2.",
    )
    db_pool_pre_ping: bool = Field(
        True,
        description="Test each pooled connection before use, so a restarted database server "
        "costs no failed request (DB_POOL_PRE_PING; server databases only).",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="Largest JSON request body, in bytes (MAX_BODY_BYTES; 413 above). CSV "
        "imports have their own limit, IMPORT_MAX_BYTES.",
    )
    max_url_bytes: int = Field(
        8192, ge=256, description="Longest path plus query string, in bytes (MAX_URL_BYTES; 414)."
    )
    import_max_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1,
        description="Largest CSV import accepted, in bytes (IMPORT_MAX_BYTES).",
    )
    import_max_rows: int = Field(
        200_000, ge=1, description="Most data rows in one CSV import (IMPORT_MAX_ROWS)."
    )
    rate_limit_writes: str = Field(
        "60/minute",
        description="Writes (POST, PUT, PATCH, DELETE) one client address may make, in the "
        "`limits` notation, e.g. `60/minute` or `10/second;500/hour` (RATE_LIMIT_WRITES; empty: "
        "no limit). Above it: 429 with Retry-After. Each worker process counts on its own.",
    )
    rate_limit_reads: str = Field(
        "",
        description="Reads under /api/ one client address may make, in the same notation "
        "(RATE_LIMIT_READS; empty, the default: no limit).",
    )
    statement_timeout_ms: int = Field(
        10_000,
        ge=0,
        description="Longest one SQL statement of a request may run, in milliseconds "
        "(STATEMENT_TIMEOUT_MS; 0: no limit). Above it the request gets a 503.",
    )
    response_cache_entries: int = Field(
        4096, ge=0, description="JSON responses cached per worker (RESPONSE_CACHE_ENTRIES; 0: off)."
    )
    response_cache_mb: int = Field(
        64, ge=1, description="Most memory the response cache may hold, in MB (RESPONSE_CACHE_MB)."
    )
    docs_enabled: bool = Field(
        True, description="Serve Swagger UI at /docs and ReDoc at /redoc (DOCS_ENABLED)."
    )
    seed_dir: Path = Field(ROOT / "seed", description="Folder of seed CSV files (SEED_DIR).")
    log_level: str = Field("info", description="uvicorn log level (LOG_LEVEL).")

    @field_validator("rate_limit_writes", "rate_limit_reads")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        if value.strip():
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(
                    f"{value!r} is not a rate limit such as 60/minute or 10/second;500/hour"
                ) from exc
        return value.strip()

    @property
    def pool_size(self) -> int:
        return self.db_pool_size or self.threadpool_size


@lru_cache
def get_settings() -> Settings:
    return Settings()
