"""Configuration: read once from the environment (and .env), validated, then passed in."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_HS_SECRET_BYTES = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # None: start the embedded PostgreSQL under data_dir (development default).
    database_url: str | None = None
    data_dir: Path = Path(".data")

    better_auth_secret: str | None = None
    better_auth_url: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # A token with an unknown `kid` refetches the JWKS at once (a key just rotated in), but two
    # refetches are at least this far apart, so random kids cannot flood the auth server.
    jwks_refetch_cooldown_seconds: float = Field(default=3.0, ge=0, le=60)
    # Keys are fetched again after this long, so a key removed upstream stops being trusted.
    jwks_max_age_seconds: float = Field(default=600.0, gt=0)

    cors_origins: list[str] = []
    log_level: str = "INFO"

    db_pool_min_size: int = Field(default=2, ge=0)
    db_pool_max_size: int = Field(default=16, ge=1)
    db_command_timeout_seconds: float = Field(default=10.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # Waiting for a free pooled connection (or a new one) is bounded too: 503, never a hang.
    db_acquire_timeout_seconds: float = Field(default=5.0, gt=0)
    # Neon's "-pooler" endpoints and PgBouncer in transaction mode cannot keep prepared
    # statements across transactions. None: detected from the host name.
    db_statement_cache: bool | None = None

    max_body_bytes: int = Field(default=65536, ge=1024)
    # Per user (per client address before a token is accepted), per process: `burst` requests at
    # once, then this many per second. 0 turns the limit off.
    rate_limit_per_second: float = Field(default=20.0, ge=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    # Tasks one user may store; 0: no limit.
    max_tasks_per_user: int = Field(default=100_000, ge=0)
    cursor_secret: str | None = None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def split_origins(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

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
