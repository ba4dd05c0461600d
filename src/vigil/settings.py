"""Settings: the only reader of the environment and ``.env``. Built once, passed down.

One module, past the usual size, because it is the one place that reads the environment:
every setting, its default, its check and its documentation line stand together.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

import platformdirs
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

from vigil.durations import Duration, PositiveDuration
from vigil.strict import unknown_field

DATABASE_FILE = "vigil.db"


def default_data_dir() -> Path:
    """The user's data directory for Vigil, where the default database lives: ``vigil``
    under ``$XDG_DATA_HOME`` (``~/.local/share``) on Linux, ``~/Library/Application
    Support`` on macOS, ``%LOCALAPPDATA%`` on Windows. Never the working directory, so
    every command finds the same database wherever it runs."""
    return Path(platformdirs.user_data_dir("vigil", appauthor=False))


def _default_database_url(data: dict[str, Any]) -> str:
    data_dir = data.get("data_dir") or default_data_dir()
    return f"sqlite:///{Path(data_dir) / DATABASE_FILE}"


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""Host names every Vigil API answers to, whatever VIGIL_ALLOWED_HOSTS says."""

NOT_SETTINGS = ("VIGIL_TEST_", "VIGIL_REQUIRE_SERVICES", "VIGIL_CHAOS_SECONDS")
"""``VIGIL_*`` variables (or prefixes) that are not settings: the test suite's own. Any other
``VIGIL_*`` variable that is not a setting is refused at start (a misspelt setting would
otherwise be silently ignored)."""

_UNKNOWN = "vigil_unknown_variables"
"""Where :class:`_UnknownVariables` hands the names it found to the model's validation."""


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

    data_dir: Path = Field(default_factory=default_data_dir)
    # Declared after data_dir: its default is the SQLite file in that directory.
    database_url: str = Field(
        default_factory=_default_database_url,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("CORS_ORIGINS", "cors_origins")
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Host names (``Host`` header, without the port) the API answers to besides its listen
    address and the loopback names; ``*.example.com`` for a domain's names, ``*`` for any."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    env: Literal["development", "production"] = "development"
    simulator_enabled: bool | None = None
    auth: Literal["auto", "required", "off"] = "auto"
    metrics_auth: bool = False
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
    idempotency_ttl_seconds: Duration = 86400.0
    runner_enabled: bool = True
    runner_interval_seconds: Duration = 10.0
    decision_retention: Duration = 30 * 86400.0
    prune_chunk_size: int = Field(default=10_000, ge=1)

    remediations_file: Path | None = None

    queue_prefix: str = Field(
        default="vigil", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9:_.-]+$"
    )
    queue_visibility_timeout_seconds: Duration = 60.0
    queue_max_deliveries: int = Field(default=5, ge=1)
    reconcile_interval_seconds: Duration = 10.0

    worker_concurrency: int = Field(default=10, ge=1, le=1000)
    worker_lease_seconds: Duration = 60.0
    worker_max_attempts: int = Field(default=3, ge=1, le=100)
    worker_retry_base_seconds: Duration = 2.0
    worker_retry_max_seconds: Duration = 300.0
    worker_shutdown_timeout_seconds: Duration = 30.0
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9101, ge=1, le=65535)

    api_url: str | None = None
    api_key: SecretStr | None = None

    remediator_url: str | None = None
    remediator_secret: SecretStr | None = None
    remediator_host: str = "127.0.0.1"
    remediator_port: int = Field(default=8081, ge=1, le=65535)
    remediator_timeout_seconds: Duration = 30.0

    alert_stale_seconds: PositiveDuration = 900.0
    remote_write_store: Literal["used", "all"] = "used"
    prometheus_url: str | None = None
    prometheus_timeout_seconds: PositiveDuration = 10.0
    otlp_target_attributes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Where an OTLP data point names its target, first present wins; empty: the default
    order (vigil.ingest.labels.OTLP_TARGET_ATTRIBUTES)."""

    notifications_file: Path | None = None
    external_url: str | None = None
    """Where people reach this Vigil (``https://vigil.example.com``): links in messages are
    absolute under it. Unset: they are paths."""
    notify_webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    notify_timeout_seconds: Duration = 5.0
    notify_max_attempts: int = Field(default=5, ge=1, le=100)
    notify_retry_base_seconds: Duration = 1.0
    notify_retry_max_seconds: Duration = 300.0
    notify_interval_seconds: Duration = 2.0

    db_pool_size: int = Field(default=10, ge=1)
    db_busy_timeout_seconds: Duration = 30.0
    sqlite_cache_mib: int = Field(default=16, ge=1)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return default_data_dir()  # set but empty: as if unset
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        unknown = _UnknownVariables(settings_cls, env_settings, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, file_secret_settings, unknown

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_variables(cls, data: Any) -> Any:
        if isinstance(data, dict) and _UNKNOWN in data:
            data = dict(data)
            names = data.pop(_UNKNOWN)
            known = sorted(setting_env_name(field) for field in cls.model_fields)
            problems = [
                unknown_field(name, known, kind="setting", prefix="VIGIL_") for name in names
            ]
            raise ValueError("; ".join(problems))
        return data

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _cors_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = [host.lower() for host in value]
        for host in hosts:
            bare = host.removeprefix("*.") if host != "*" else "x"
            if not bare or "*" in bare or "/" in bare or (":" in bare and not bare.startswith("[")):
                raise ValueError(
                    f"{host!r}: give host names or addresses without a scheme or port "
                    "(comma-separated; '*.example.com' for a domain, '*' for any)"
                )
        return list(dict.fromkeys(hosts))

    @property
    def served_hosts(self) -> tuple[str, ...]:
        """Every ``Host`` the API answers to: the listen address (unless it is every
        address), the loopback names, ``VIGIL_EXTERNAL_URL``'s host (what Slack's button
        clicks and every link in a message call) and ``VIGIL_ALLOWED_HOSTS``."""
        listen = [] if self.host in ("", "0.0.0.0", "::") else [_host_name(self.host)]
        external = urlsplit(self.external_url).hostname if self.external_url else None
        named = [_host_name(external)] if external else []
        return tuple(dict.fromkeys([*listen, *LOOPBACK_HOSTS, *named, *self.allowed_hosts]))

    @property
    def simulator_on(self) -> bool:
        """Whether the simulator's routes answer: as ``VIGIL_SIMULATOR_ENABLED`` says, else
        everywhere but in production."""
        if self.simulator_enabled is not None:
            return self.simulator_enabled
        return self.env != "production"

    @field_validator("remediator_url", "api_url", "prometheus_url")
    @classmethod
    def _remediator_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("use http://HOST:PORT or https://HOST:PORT")
        return value

    @field_validator("otlp_target_attributes", mode="before")
    @classmethod
    def _split_attributes(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("notify_webhook_urls", mode="before")
    @classmethod
    def _split_webhook_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("notify_webhook_urls")
    @classmethod
    def _webhook_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if _http_url(url) is None:
                # Never echo the URL: a webhook's path or query often is its token.
                raise ValueError(
                    "each URL must be http://HOST/... or https://HOST/... (comma-separated)"
                )
        return list(dict.fromkeys(value))

    @field_validator("external_url")
    @classmethod
    def _external_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = _http_url(value.strip())
        if parts is None or parts.query or parts.fragment:
            raise ValueError("must be http://HOST[:PORT][/PATH] or https://... (no query)")
        return value.strip().rstrip("/")

    @field_validator("remediator_secret")
    @classmethod
    def _remediator_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _remediator_needs_secret(self) -> Settings:
        if self.remediator_url is not None and self.remediator_secret is None:
            raise ValueError(
                "VIGIL_REMEDIATOR_URL is set but VIGIL_REMEDIATOR_SECRET is not: "
                "workers sign every request to the remediator with it"
            )
        if self.worker_retry_max_seconds < self.worker_retry_base_seconds:
            raise ValueError(
                "VIGIL_WORKER_RETRY_MAX_SECONDS must not be below VIGIL_WORKER_RETRY_BASE_SECONDS"
            )
        if self.notify_retry_max_seconds < self.notify_retry_base_seconds:
            raise ValueError(
                "VIGIL_NOTIFY_RETRY_MAX_SECONDS must not be below VIGIL_NOTIFY_RETRY_BASE_SECONDS"
            )
        return self

    @field_validator(
        "runner_interval_seconds",
        "idempotency_ttl_seconds",
        "queue_visibility_timeout_seconds",
        "reconcile_interval_seconds",
        "worker_lease_seconds",
        "worker_retry_base_seconds",
        "worker_retry_max_seconds",
        "remediator_timeout_seconds",
        "notify_timeout_seconds",
        "notify_retry_base_seconds",
        "notify_retry_max_seconds",
        "notify_interval_seconds",
    )
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value


def _http_url(url: str) -> SplitResult | None:
    """``url``'s parts when it is ``http(s)://HOST[:PORT]...`` with a number for a port;
    else ``None``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError:
        return None
    return parts if parts.scheme in ("http", "https") and parts.hostname else None


def _host_name(address: str) -> str:
    """``address`` as it appears in a ``Host`` header (an IPv6 address in brackets)."""
    address = address.lower()
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


class _UnknownVariables(PydanticBaseSettingsSource):
    """Finds ``VIGIL_*`` names in the environment and the ``.env`` file that are not settings
    (nor in :data:`NOT_SETTINGS`), for :meth:`Settings._refuse_unknown_variables`."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._sources = sources

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        known = {setting_env_name(field) for field in self.settings_cls.model_fields}
        names: set[str] = set()
        for source in self._sources:
            names.update(str(name).upper() for name in getattr(source, "env_vars", {}))
        unknown = sorted(
            name
            for name in names
            if name.startswith("VIGIL_") and name not in known and not name.startswith(NOT_SETTINGS)
        )
        return {_UNKNOWN: unknown} if unknown else {}


_UNPREFIXED = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "cors_origins": "CORS_ORIGINS",
}


def client_settings() -> tuple[str | None, str | None]:
    """``VIGIL_API_URL`` and ``VIGIL_API_KEY`` (for ``vigil simulate`` and the simulator
    plugin), read as every setting is, from the environment or ``.env``; straight from the
    environment when other settings do not load (the program's own start says why)."""
    try:
        settings = Settings()
    except ValidationError:
        return os.environ.get("VIGIL_API_URL") or None, os.environ.get("VIGIL_API_KEY") or None
    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return settings.api_url, key


def setting_env_name(field: str) -> str:
    """The environment variable that sets ``field`` (a field name or its alias)."""
    if field in _UNPREFIXED.values():
        return field
    return _UNPREFIXED.get(field, f"VIGIL_{field.upper()}")


def describe_settings_error(exc: ValidationError) -> str:
    """One line per invalid setting, naming its environment variable."""
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # a rule across settings names them in its message
            lines.append(f"invalid settings: {error['msg'].removeprefix('Value error, ')}")
            continue
        field = str(error["loc"][0])
        lines.append(f"invalid setting {setting_env_name(field)}: {error['msg']}")
    return "\n".join(lines)
