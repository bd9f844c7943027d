"""Who may call the emulator: PATs, basic users, and tokens issued to OAuth and Azure AD clients."""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass
class Client:
    secret: str
    ttl_seconds: float


class Credentials:
    """Validates ``Authorization`` headers and issues client-credentials tokens."""

    def __init__(self) -> None:
        self.pats: set[str] = set()
        self.basic: dict[str, str] = {}
        self.oauth_clients: dict[str, Client] = {}
        self.azure_clients: dict[tuple[str, str], Client] = {}
        # issued token -> (principal, monotonic expiry)
        self.issued: dict[str, tuple[str, float]] = {}
        self._basic_cache: dict[str, str] = {}

    def principal(self, header: str | None) -> str | None:
        """The user name a request acts as, or None when its credentials are not valid."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer":
            return self._bearer(value)
        if scheme == "basic":
            return self._basic(value)
        return None

    def _bearer(self, token: str) -> str | None:
        if token in self.pats:
            return "emulator-user@example.com"
        issued = self.issued.get(token)
        if issued is not None and time.monotonic() < issued[1]:
            return issued[0]
        return None

    def _basic(self, value: str) -> str | None:
        cached = self._basic_cache.get(value)
        if cached is not None:
            return cached
        user = _check_basic(value, self.basic)
        if user is not None:
            self._basic_cache[value] = user
        return user

    def add_basic_user(self, user: str, password: str) -> None:
        self.basic[user] = password
        self._basic_cache.clear()

    def expire_issued(self) -> None:
        self.issued.clear()

    def issue_oauth(self, header: str | None, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """``POST /oidc/v1/token``: (status, body) of the OAuth client-credentials exchange."""
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "only client_credentials is supported"}
        client_id, secret = _client_auth(header, form)
        client = self.oauth_clients.get(client_id or "")
        if client is None or not secrets.compare_digest(client.secret, secret or ""):
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        token = self._issue(f"{client_id}", client.ttl_seconds)
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": math.ceil(client.ttl_seconds),
            "scope": form.get("scope", "all-apis"),
        }

    def issue_azure(
        self, tenant: str, header: str | None, form: Mapping[str, str], v2: bool
    ) -> tuple[int, dict[str, Any]]:
        """``POST /{tenant}/oauth2[/v2.0]/token``: an Azure AD client-credentials token."""
        if form.get("grant_type") != "client_credentials":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "AADSTS70003: only client_credentials is supported",
            }
        client_id, secret = _client_auth(header, form)
        client = self.azure_clients.get((tenant, client_id or ""))
        if client is None:
            return 400, {
                "error": "unauthorized_client",
                "error_description": f"AADSTS700016: Application {client_id} was not found in tenant {tenant}",
            }
        if not secrets.compare_digest(client.secret, secret or ""):
            return 401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
            }
        token = self._issue(f"{client_id}@{tenant}", client.ttl_seconds)
        expires_in = math.ceil(client.ttl_seconds)
        expires_on = int(time.time() + client.ttl_seconds)
        body: dict[str, Any] = {"token_type": "Bearer", "access_token": token}
        if v2:
            body.update(expires_in=expires_in, ext_expires_in=expires_in, expires_on=expires_on)
        else:  # the v1 endpoint sends its numbers as strings
            body.update(
                expires_in=str(expires_in),
                ext_expires_in=str(expires_in),
                expires_on=str(expires_on),
                resource=form.get("resource", ""),
            )
        return 200, body

    def _issue(self, principal: str, ttl: float) -> str:
        token = "emu-" + secrets.token_urlsafe(24)
        self.issued[token] = (principal, time.monotonic() + ttl)
        return token


def _decode_basic(value: str) -> tuple[str, str] | None:
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _check_basic(value: str, users: Mapping[str, str]) -> str | None:
    pair = _decode_basic(value)
    if pair is None:
        return None
    user, password = pair
    expected = users.get(user)
    return user if expected is not None and secrets.compare_digest(expected, password) else None


def _client_auth(header: str | None, form: Mapping[str, str]) -> tuple[str | None, str | None]:
    if header and header.lower().startswith("basic "):
        pair = _decode_basic(header[6:].strip())
        if pair is not None:
            return unquote(pair[0]), unquote(pair[1])
    return form.get("client_id"), form.get("client_secret")
