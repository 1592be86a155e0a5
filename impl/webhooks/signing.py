"""Standard Webhooks signing (https://www.standardwebhooks.com): secrets and signatures.

A signature is `v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), where the key is
the secret's base64 part after `whsec_`. During a rotation both secrets sign, and the header
carries both signatures separated by a space, as the spec allows. Signing is these few lines
rather than the `standardwebhooks` package, so that the tests' verification by that package
(and by its JavaScript twin) checks our output against an independent implementation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature_header(
    signing_secrets: list[str], message_id: str, timestamp: int, body: bytes
) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in signing_secrets:
        key = base64.b64decode(secret.removeprefix(PREFIX))
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)
