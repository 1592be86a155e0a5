"""Configuration: read once from the environment (and .env), validated, then passed in.

Every field is one environment variable (its name in upper case), documented in README's
Configuration table. A field's `description` says what the variable expects: a bad value stops
the command with that, on one line (`load_settings`), never a traceback.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

MIN_HS_SECRET_BYTES = 32
# The contract promises these (Access-Control-Allow-Origin, Retry-After, RateLimit headers).
MAX_ORIGIN_CHARS = 2048
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+")
MAX_RATE_LIMIT_REFILL_SECONDS = 86400
MAX_RATE_LIMIT_BURST = 1_000_000_000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Never echoed back in an error message, and masked by `task-api config`.
SECRET_FIELDS = frozenset(
    {"database_url", "database_listen_url", "better_auth_secret", "cursor_secret"}
)

_ORIGINS = (
    "browser origins such as http://localhost:3000 (scheme://host[:port], no path): one, "
    'comma-separated, or a JSON list of strings; "*" for any'
)


class Settings(BaseSettings):
    # An empty value counts as unset (`CORS_ORIGINS=` in a .env template: none), and the
    # environment wins over .env. An unknown key in .env is refused (`extra="forbid"` applies to
    # the .env source and to keyword arguments; the environment source only ever reads our
    # names): a misspelled `CORS_ORIGIN=` there would otherwise be silently ignored. The
    # environment is shared with everything else on the machine, so a name there that merely
    # looks like ours is a warning (`misspelled_variables`), not an error.
    model_config = SettingsConfigDict(env_file=".env", extra="forbid", env_ignore_empty=True)

    # None: start the embedded PostgreSQL under data_dir (development default).
    database_url: str | None = Field(
        default=None, description="a postgresql:// URL (postgres:// and postgresql+asyncpg:// too)"
    )
    data_dir: Path = Field(
        default=Path(".data"), description="a directory for the embedded PostgreSQL"
    )

    better_auth_secret: str | None = Field(
        default=None, description=f"the shared HS256 secret, at least {MIN_HS_SECRET_BYTES} bytes"
    )
    better_auth_url: str | None = Field(
        default=None, description="Better Auth's base URL, http(s)://..."
    )
    jwt_jwks_url: str | None = Field(default=None, description="an http(s):// URL of a JWKS")
    jwt_issuer: str | None = Field(default=None, description="the `iss` tokens must carry")
    jwt_audience: str | None = Field(default=None, description="the `aud` tokens must carry")
    jwt_leeway_seconds: int = Field(
        default=30, ge=0, le=300, description="a whole number of seconds from 0 to 300"
    )
    # A token with an unknown `kid` refetches the JWKS at once (a key just rotated in), but two
    # refetches are at least this far apart, so random kids cannot flood the auth server.
    jwks_refetch_cooldown_seconds: float = Field(
        default=3.0, ge=0, le=60, allow_inf_nan=False, description="seconds from 0 to 60"
    )
    # Keys are fetched again after this long, so a key removed upstream stops being trusted.
    jwks_max_age_seconds: float = Field(
        default=600.0, gt=0, allow_inf_nan=False, description="a number of seconds above 0"
    )

    cors_origins: Annotated[list[str], NoDecode] = Field(default=[], description=_ORIGINS)
    log_level: str = Field(default="INFO", description="one of " + ", ".join(LOG_LEVELS))
    # auto: human-readable lines when stderr is a terminal, JSON lines otherwise.
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="json, text or auto"
    )

    db_pool_min_size: int = Field(default=2, ge=0, description="a whole number, 0 or more")
    db_pool_max_size: int = Field(default=16, ge=1, description="a whole number, 1 or more")
    db_command_timeout_seconds: float = Field(
        default=10.0, gt=0, allow_inf_nan=False, description="a number of seconds above 0"
    )
    db_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, allow_inf_nan=False, description="a number of seconds above 0"
    )
    # Waiting for a free pooled connection (or a new one) is bounded too: 503, never a hang.
    db_acquire_timeout_seconds: float = Field(
        default=5.0, gt=0, allow_inf_nan=False, description="a number of seconds above 0"
    )
    # Neon's "-pooler" endpoints and PgBouncer in transaction mode cannot keep prepared
    # statements across transactions. None: detected from the host name.
    db_statement_cache: bool | None = Field(default=None, description="true, false or auto")

    max_body_bytes: int = Field(
        default=65536, ge=1024, description="a whole number of bytes, at least 1024"
    )
    # Per user (per client address before a token is accepted), per process: `burst` requests at
    # once, then this many per second. 0 turns the limit off.
    rate_limit_per_second: float = Field(
        default=20.0, ge=0, allow_inf_nan=False, description="requests per second, 0 or more"
    )
    rate_limit_burst: int = Field(
        default=200, ge=1, le=MAX_RATE_LIMIT_BURST,
        description=f"a whole number from 1 to {MAX_RATE_LIMIT_BURST}",
    )
    # Tasks one user may store; 0: no limit.
    max_tasks_per_user: int = Field(default=100_000, ge=0, description="a whole number, 0 or more")
    cursor_secret: str | None = Field(default=None, description="any string")
    # After SIGTERM: /api/ready answers 503 and the listener stays open at least this long, so a
    # load balancer takes the replica out before it closes (impl/platform/hand_over.py). 0: no hand-over.
    shutdown_ready_grace_seconds: float = Field(
        default=0.0, ge=0, le=60, allow_inf_nan=False, description="a number of seconds from 0 to 60"
    )
    # Slow clients (impl/platform/slow_clients.py): a request's head must arrive within this of
    # the connection being ready for it, its body within this of the head; then the connection
    # closes (408). Responses, the live stream's included, are never cut by them.
    request_head_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, allow_inf_nan=False,
        description="a number of seconds above 0, at most 300",
    )
    request_body_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, allow_inf_nan=False,
        description="a number of seconds above 0, at most 600",
    )
    # Open connections per process; over it, the one waiting longest for a request head closes.
    max_connections: int = Field(
        default=10_000, ge=16, le=1_000_000, description="a whole number from 16 to 1000000"
    )
    # The change feed and its live stream (impl/tasks/changes.py, impl/tasks/live.py).
    # Tombstones are kept this long; an older sync token answers 410 (30 days by default).
    sync_retention_seconds: int = Field(
        default=30 * 86400, ge=1, le=3650 * 86400,
        description="a whole number of seconds from 1 to 315360000 (ten years)",
    )
    # A comment line on an idle stream this often, so proxies do not close it.
    sync_heartbeat_seconds: float = Field(
        default=15.0, gt=0, le=300, allow_inf_nan=False,
        description="a number of seconds above 0, at most 300",
    )
    # Open streams per user on one server; one more answers 429.
    sync_max_streams_per_user: int = Field(
        default=10, ge=1, le=10_000, description="a whole number from 1 to 10000"
    )
    # Where the live streams LISTEN for commits: a direct (not pooled) connection. Unset: the
    # DATABASE_URL, unless that is a transaction pooler (statement cache off), where LISTEN
    # cannot work: then each stream polls every SYNC_POLL_SECONDS instead.
    database_listen_url: str | None = Field(default=None, description="a postgresql:// URL")
    sync_poll_seconds: float = Field(
        default=2.0, gt=0, le=60, allow_inf_nan=False,
        description="a number of seconds above 0, at most 60",
    )
    # How often each replica's scheduler looks for reminders that came due (it also sleeps
    # only until the next known one): the most a reminder written moments before its time waits.
    reminder_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, allow_inf_nan=False,
        description="a number of seconds above 0, at most 60",
    )
    # Reminders one claim fires, in one transaction.
    reminder_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="a whole number from 1 to 10000"
    )

    # Prometheus metrics (impl/platform/metrics.py): served by `task-api serve` on a port of their
    # own, never on the API's (no bearer token reaches them, no rate limit applies). None: off.
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="a port number from 1 to 65535"
    )
    # Loopback by default: only what runs on the machine (a Prometheus agent, a sidecar) scrapes.
    metrics_host: str = Field(default="127.0.0.1", description="an address to listen on")
    # OpenTelemetry traces (impl/platform/tracing.py): set, every request is a span exported over
    # OTLP/HTTP here; the SDK reads the other OTEL_* variables itself. Unset: nothing installed.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, description="an http(s):// URL of an OTLP/HTTP collector"
    )

    # Webhooks (impl/webhooks/). By default an endpoint must be https and reach a public
    # address; these two open it up for development and tests (a receiver on 127.0.0.1).
    webhook_allow_http: bool = Field(default=False, description="true or false")
    # Whether this process runs a delivery worker (false: an API-only replica, while other
    # replicas deliver).
    webhook_delivery: bool = Field(default=True, description="true or false")
    webhook_allow_private_addresses: bool = Field(default=False, description="true or false")
    # Subscriptions one user may hold; one more answers 409 QUOTA_EXCEEDED.
    max_webhooks_per_user: int = Field(
        default=25, ge=1, le=10_000, description="a whole number from 1 to 10000"
    )
    # One attempt's whole time (connect, send, answer); a claim's lease is this plus a margin.
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, allow_inf_nan=False,
        description="a number of seconds above 0, at most 60",
    )
    # Attempts in flight to one endpoint at once, across every replica.
    webhook_max_in_flight_per_endpoint: int = Field(
        default=4, ge=1, le=100, description="a whole number from 1 to 100"
    )
    # Attempts in flight from one replica at once.
    webhook_worker_concurrency: int = Field(
        default=32, ge=1, le=1000, description="a whole number from 1 to 1000"
    )
    # Retries wait base * 2^(attempt-1) seconds, at most an hour, with jitter (docs in README);
    # an event is retried for WEBHOOK_RETRY_FOR_SECONDS after it was recorded.
    webhook_retry_base_seconds: float = Field(
        default=5.0, gt=0, le=3600, allow_inf_nan=False,
        description="a number of seconds above 0, at most 3600",
    )
    webhook_retry_for_seconds: int = Field(
        default=2 * 86400, ge=1, le=30 * 86400,
        description="a whole number of seconds from 1 to 2592000 (30 days)",
    )
    # After a secret's rotation the old one keeps signing (a second signature) this long.
    webhook_secret_grace_seconds: int = Field(
        default=86400, ge=0, le=30 * 86400,
        description="a whole number of seconds from 0 to 2592000 (30 days)",
    )

    @field_validator("database_url", "database_listen_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None:
            scheme = urlsplit(value).scheme
            if scheme.split("+", 1)[0] not in ("postgres", "postgresql"):
                raise ValueError(f"got {scheme or 'no scheme'}://" if scheme else "no scheme")
        return value

    @field_validator("better_auth_url", "jwt_jwks_url", "otel_exporter_otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("not an http(s) URL")
            value = value.strip()
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc.msg} at character {exc.pos}") from None
            if not isinstance(parsed, list) or not all(isinstance(o, str) for o in parsed):
                raise ValueError("not a JSON list of strings")
            origins = [origin.strip() for origin in parsed]
        else:
            origins = [origin.strip() for origin in text.split(",")]
        origins = [origin for origin in origins if origin]
        for origin in origins:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if not parts.scheme or not parts.netloc or parts.path or parts.query or parts.fragment:
                # A browser sends `Origin: http://localhost:3000`, never a path or a trailing
                # slash: such an entry would never match, silently.
                raise ValueError(f"{origin!r} is not an origin")
            if len(origin) > MAX_ORIGIN_CHARS or not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin[:100]!r} is not an origin")
        return origins

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper()
            if value not in LOG_LEVELS:
                raise ValueError("unknown level")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("db_statement_cache", mode="before")
    @classmethod
    def _auto(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return None
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError(
                f"DB_POOL_MIN_SIZE ({self.db_pool_min_size}) is larger than DB_POOL_MAX_SIZE "
                f"({self.db_pool_max_size})"
            )
        return self

    @model_validator(mode="after")
    def _rate_limit_refill(self) -> Settings:
        # A bucket refills in burst / rate seconds; Retry-After and the RateLimit headers never
        # exceed it, and the contract promises at most a day.
        rate, burst = self.rate_limit_per_second, self.rate_limit_burst
        if rate and burst / rate > MAX_RATE_LIMIT_REFILL_SECONDS:
            raise ValueError(
                f"RATE_LIMIT_BURST ({burst}) / RATE_LIMIT_PER_SECOND ({rate}) is over "
                f"{MAX_RATE_LIMIT_REFILL_SECONDS} seconds: a bucket must refill within a day"
            )
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def jwks_url(self) -> str | None:
        if self.jwt_jwks_url:
            return self.jwt_jwks_url
        if self.better_auth_url:
            return self.better_auth_url.rstrip("/") + "/api/auth/jwks"
        return None

    @property
    def issuer(self) -> str | None:
        return self.jwt_issuer or (self.better_auth_url.rstrip("/") if self.better_auth_url else None)

    @property
    def audience(self) -> str | None:
        return self.jwt_audience or (
            self.better_auth_url.rstrip("/") if self.better_auth_url else None
        )

    def auth_problem(self) -> str | None:
        """Why the server must not start with this auth configuration, or None."""
        if not self.better_auth_secret:
            if self.jwks_url:
                return None
            return (
                "no token key configured: set BETTER_AUTH_SECRET (HS256, at least "
                f"{MIN_HS_SECRET_BYTES} bytes) or BETTER_AUTH_URL / JWT_JWKS_URL (JWKS)"
            )
        if len(self.better_auth_secret.encode()) < MIN_HS_SECRET_BYTES:
            return (
                f"BETTER_AUTH_SECRET is {len(self.better_auth_secret.encode())} bytes; "
                f"HS256 needs at least {MIN_HS_SECRET_BYTES}"
            )
        return None


class ConfigurationError(Exception):
    """A setting has a value it cannot take; str() is one line for the user."""


def load_settings() -> Settings:
    """Settings from the environment and .env, or ConfigurationError naming each bad variable
    (as its environment name), what it expects and where it came from."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None
    except SettingsError as exc:  # a source could not parse a value at all
        raise ConfigurationError(f"invalid configuration: {exc}") from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        if not error["loc"]:  # a rule between fields: its message names them
            problems.append(str(error["ctx"]["error"]) if "ctx" in error else error["msg"])
            continue
        field = str(error["loc"][0])
        name = field.upper()
        if error["type"] == "extra_forbidden":  # only .env can bring an unknown name
            problems.append(f"{name} (in .env) is not a setting: {_did_you_mean(name)}")
            continue
        info = Settings.model_fields.get(field)
        expects = info.description if info and info.description else error["msg"]
        where = "" if _in_environment(name) else " (in .env)"
        shown = "" if field in SECRET_FIELDS else f"={_shorten(error.get('input'))}"
        reason = ""
        if error["type"] == "value_error":  # our validators say what was wrong
            reason = f" ({error['ctx']['error']})"
        problems.append(f"{name}{shown}{where} is not valid{reason}: expected {expects}")
    return "; ".join(problems)


# The first word of every setting's name, or the first two where the first says little
# (MAX_BODY_BYTES and MAX_TASKS_PER_USER are not the only MAX_ variables around).
_GENERIC_WORDS = frozenset({"MAX"})
_OTEL = "OTEL_"


def _prefix(name: str) -> str:
    words = name.split("_")
    return "_".join(words[:2] if words[0] in _GENERIC_WORDS else words[:1]) + "_"


def _known_names() -> list[str]:
    return [field.upper() for field in Settings.model_fields]


def _did_you_mean(name: str) -> str:
    closest = difflib.get_close_matches(name, _known_names(), n=1, cutoff=0.0)
    return f"did you mean {closest[0]}?" if closest else "see `task-api config` for the names"


def misspelled_variables() -> list[str]:
    """One line for each environment variable that is not a setting but starts like one
    (`CORS_ORIGIN`, `DB_POOL_MAX`), naming the closest setting: the command goes on, the
    variable is ignored."""
    known = set(_known_names())
    prefixes = {_prefix(name) for name in known}
    lines = []
    for key in sorted(os.environ):
        name = key.upper()
        if name.startswith(_OTEL) and name not in known:
            continue  # OpenTelemetry's own variables: its SDK reads them (impl/platform/tracing.py)
        if name not in known and _prefix(name) in prefixes and os.environ[key]:
            lines.append(f"{key} is not a setting and is ignored: {_did_you_mean(name)}")
    return lines


def _in_environment(name: str) -> bool:
    return any(key.upper() == name for key in os.environ)


def _shorten(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text if len(text) <= 60 else text[:57] + "..."
    return json.dumps(text)


def describe_value(field: str, value: Any) -> Any:
    """A setting's value as `task-api config` shows it, in README's words: secrets masked, and
    the statement cache's None as `auto` (decided from the host name), which is what one writes
    to get it."""
    if field == "db_statement_cache" and value is None:
        return "auto"
    if value is None:
        return None
    if field in ("database_url", "database_listen_url"):  # the password masked, the rest shown
        parts = urlsplit(value)
        if parts.password:
            netloc = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
            return parts._replace(netloc=netloc).geturl()
        return value
    if field in SECRET_FIELDS:
        return f"*** ({len(str(value).encode())} bytes)"
    if isinstance(value, Path):
        return str(value)
    return value
