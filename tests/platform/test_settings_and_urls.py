"""Configuration: pasted database URLs and the start-up refusal rules."""

from __future__ import annotations

import pytest

from impl.platform.database import Database, connect_options
from tests.support.servers import settings

NEON = (
    "postgresql://neondb_owner:secret@ep-cool-darkness-123456.eu-central-1.aws.neon.tech/neondb"
    "?sslmode=require&channel_binding=require"
)


def test_neon_url_is_translated_for_asyncpg() -> None:
    options = connect_options(NEON)
    assert "sslmode=require" in options.dsn  # asyncpg reads it: TLS on
    assert "channel_binding" not in options.dsn  # asyncpg would send it as a server setting
    assert options.dsn.startswith("postgresql://neondb_owner:secret@ep-cool-darkness")
    assert options.statement_cache_size > 0


def test_neon_pooler_host_turns_the_statement_cache_off() -> None:
    pooled = NEON.replace("ep-cool-darkness-123456", "ep-cool-darkness-123456-pooler")
    assert connect_options(pooled).statement_cache_size == 0
    assert connect_options(NEON, statement_cache=False).statement_cache_size == 0


@pytest.mark.parametrize(
    "url", ["postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db", "postgresql://u:p@h:5433/db"]
)
def test_scheme_variants(url: str) -> None:
    assert connect_options(url).dsn.startswith("postgresql://u:p@h")


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        connect_options("mysql://u:p@h/db")


async def test_a_url_with_libpq_parameters_really_connects(database_url: str) -> None:
    # The embedded server listens on a Unix socket, where TLS does not apply; the point is
    # that the pasted parameters do not break the connection.
    separator = "&" if "?" in database_url else "?"
    pasted = f"{database_url}{separator}sslmode=prefer&channel_binding=require"
    database = Database(pasted, settings(pasted))
    await database.open()
    try:
        await database.ping()
    finally:
        await database.close()


def test_auth_configuration_rules() -> None:
    url = "postgresql://u:p@h/db"
    assert settings(url).auth_problem() is None
    problem = settings(url, better_auth_secret="short").auth_problem()
    assert problem and "at least 32" in problem
    problem = settings(url, better_auth_secret=None).auth_problem()
    assert problem and "BETTER_AUTH_SECRET" in problem
    jwks = settings(url, better_auth_secret=None, better_auth_url="https://app.example.com/")
    assert jwks.auth_problem() is None
    assert jwks.jwks_url == "https://app.example.com/api/auth/jwks"
    assert jwks.issuer == jwks.audience == "https://app.example.com"
    custom = settings(
        url, better_auth_secret=None, jwt_jwks_url="https://keys.example.com/jwks",
        jwt_issuer="iss", jwt_audience="aud",
    )
    assert (custom.jwks_url, custom.issuer, custom.audience) == (
        "https://keys.example.com/jwks", "iss", "aud"
    )


def test_cors_origins_from_a_comma_separated_string() -> None:
    parsed = settings("postgresql://u:p@h/db", cors_origins="http://a.test, http://b.test")
    assert parsed.cors_origins == ["http://a.test", "http://b.test"]
