"""Settings: the only reader of the environment and ``.env``. Built once, passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from vigil.durations import Duration

DEFAULT_DATABASE_URL = "sqlite:///./vigil.db"


def normalize_database_url(url: str) -> str:
    """Map the accepted URL schemes onto the async drivers Vigil uses."""
    url = url.strip()
    for prefix, replacement in (
        ("sqlite+aiosqlite://", "sqlite+aiosqlite://"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql+asyncpg://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    raise ValueError(
        "unsupported database URL: use sqlite:///PATH, sqlite+aiosqlite:///PATH, "
        "postgresql://... or postgresql+asyncpg://..."
    )


class Settings(BaseSettings):
    """Every setting of Vigil. Unprefixed: DATABASE_URL, REDIS_URL, CORS_ORIGINS; else VIGIL_*."""

    model_config = SettingsConfigDict(
        env_prefix="VIGIL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("CORS_ORIGINS", "cors_origins")
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    policies_file: Path | None = None
    auto_migrate: bool = True

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_size: int = Field(default=10_000, ge=1)
    max_tags: int = Field(default=64, ge=0)
    max_tag_key_length: int = Field(default=128, ge=1)
    max_tag_value_length: int = Field(default=1024, ge=1)
    max_target_length: int = Field(default=255, ge=1, le=255)
    ingest_group_size: int = Field(default=20_000, ge=1)
    ingest_queue_limit: int = Field(default=10_000, ge=1)
    max_future_seconds: Duration = 600.0

    metrics_retention_seconds: Duration = 86400.0
    runner_enabled: bool = True
    runner_interval_seconds: Duration = 10.0
    prune_chunk_size: int = Field(default=10_000, ge=1)

    db_pool_size: int = Field(default=10, ge=1)
    db_busy_timeout_seconds: Duration = 30.0
    sqlite_cache_mib: int = Field(default=16, ge=1)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        url = normalize_database_url(value)
        if url.startswith("sqlite") and make_url(url).database in (None, "", ":memory:"):
            # Every connection would get its own empty database, and one shared connection
            # cannot hold the concurrent transactions ingest runs: use a file.
            raise ValueError("an in-memory SQLite database is not supported; use sqlite:///PATH")
        return url

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use redis://HOST:PORT/DB, rediss://... or unix://PATH")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _cors_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("runner_interval_seconds")
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value


_UNPREFIXED = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "cors_origins": "CORS_ORIGINS",
}


def setting_env_name(field: str) -> str:
    """The environment variable that sets ``field`` (a field name or its alias)."""
    if field in _UNPREFIXED.values():
        return field
    return _UNPREFIXED.get(field, f"VIGIL_{field.upper()}")


def describe_settings_error(exc: ValidationError) -> str:
    """One line per invalid setting, naming its environment variable."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        lines.append(f"invalid setting {setting_env_name(field)}: {error['msg']}")
    return "\n".join(lines)
