"""Credentials -> request headers, for both transports of the hook.

One implementation of every auth mode: the sync transport calls ``headers()``, the async
transport awaits ``aheaders()``, which answers from the token cache without I/O and runs the
same sync fetch in a thread (``run_blocking``) only when a token must be fetched, so the
event loop never blocks on a token endpoint.

Token endpoints are reached through a ``TokenFetcher`` that the hook supplies (its requests
session, TLS settings and error parsing), so a token request obeys the same TLS, proxy and
timeout settings as an API request, and its failures are classified by the same retry policy.
"""

from __future__ import annotations

import base64
import threading
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from airflow.sdk.log import mask_secret
from asgiref.sync import sync_to_async

from airflow_dbx.errors import InvalidConnectionError
from airflow_dbx.tokens import TOKEN_CACHE, TokenCache, TokenFetcher, TokenRequest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

TOKEN = "token"
BASIC = "basic"
OAUTH_M2M = "oauth-m2m"
AZURE_SP = "azure-service-principal"
DATABRICKS_SDK = "databricks-sdk"
AUTH_TYPES = (TOKEN, BASIC, OAUTH_M2M, AZURE_SP, DATABRICKS_SDK)

# The application id of Azure Databricks in every Azure AD tenant.
AZURE_DATABRICKS_APP_ID = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d"
DEFAULT_AZURE_AD_ENDPOINT = "https://login.microsoftonline.com"
# Azure Resource Manager audience per authority; public cloud for anything unknown.
_AZURE_MANAGEMENT_BY_AUTHORITY = {
    "login.microsoftonline.us": "https://management.core.usgovcloudapi.net/",
    "login.chinacloudapi.cn": "https://management.core.chinacloudapi.cn/",
}
_AZURE_MANAGEMENT_DEFAULT = "https://management.core.windows.net/"


SDK_EXTRA_HINT = "pip install 'airflow-dbx[sdk]'"

T = TypeVar("T")




def is_true(value: Any) -> bool:
    """An extra's truth: URI-form connections carry every extra as a string."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


async def run_blocking(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread, like ``asyncio.to_thread``, but through asgiref so that
    Airflow's triggerer comms work from it: Airflow 3.1 answers a sync SDK call (reading a
    connection, telling the supervisor to mask a secret) only from asgiref-managed threads."""
    return await sync_to_async(fn, thread_sensitive=False)()


# --------------------------------------------------------------------------- auth modes


class Auth:
    """Request headers for one connection. ``refreshable`` auth can recover from a 401."""

    refreshable = False

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    async def aheaders(self) -> dict[str, str]:
        return self.headers()

    def invalidate(self, headers: Mapping[str, str]) -> None:
        """Drop the cached token(s) that ``headers`` carried (after a 401)."""

    def secrets(self) -> tuple[str, ...]:
        """Every secret value this auth knows, to scrub from any text shown to users."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StaticAuth(Auth):
    """A personal access token or basic credentials: fixed headers, nothing to refresh."""

    def __init__(self, kind: str, header: str, secrets: tuple[str, ...]) -> None:
        self.kind = kind
        self._header = header
        self._secrets = tuple(s for s in secrets if s)
        # Airflow masks a connection's password, but not always a token kept in its extras,
        # nor the base64 form of basic credentials.
        for secret in self._secrets:
            mask_secret(secret)

    @classmethod
    def token(cls, token: str) -> StaticAuth:
        return cls(TOKEN, f"Bearer {token}", (token,))

    @classmethod
    def basic(cls, login: str, password: str) -> StaticAuth:
        encoded = base64.b64encode(f"{login}:{password}".encode()).decode()
        return cls(BASIC, f"Basic {encoded}", (password, encoded))

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._header}

    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def __repr__(self) -> str:
        return f"StaticAuth(kind={self.kind!r})"


class TokenAuth(Auth):
    """OAuth client-credentials tokens (Databricks M2M or Azure AD), cached per process.

    ``tokens`` maps a header name to the request of the bearer token it carries; Azure's
    workspace-management mode needs two tokens, every other mode one.
    """

    refreshable = True

    def __init__(
        self,
        kind: str,
        tokens: Mapping[str, TokenRequest],
        fetch: TokenFetcher,
        *,
        static_headers: Mapping[str, str] | None = None,
        client_secret: str = "",
        cache: TokenCache = TOKEN_CACHE,
    ) -> None:
        self.kind = kind
        self._tokens = dict(tokens)
        self._fetch = fetch
        self._static = dict(static_headers or {})
        self._client_secret = client_secret
        self._cache = cache

    def headers(self) -> dict[str, str]:
        out = dict(self._static)
        for header, request in self._tokens.items():
            out[header] = _bearer(header, self._cache.get(request, self._fetch))
        return out

    async def aheaders(self) -> dict[str, str]:
        out = dict(self._static)
        for header, request in self._tokens.items():
            value = self._cache.peek(request)
            if value is None:
                return await run_blocking(self.headers)
            out[header] = _bearer(header, value)
        return out

    def invalidate(self, headers: Mapping[str, str]) -> None:
        for header, request in self._tokens.items():
            sent = headers.get(header, "")
            self._cache.invalidate(request, sent.removeprefix("Bearer "))

    def secrets(self) -> tuple[str, ...]:
        cached = (self._cache.peek(request) for request in self._tokens.values())
        return tuple(s for s in (self._client_secret, *cached) if s)

    def __repr__(self) -> str:
        return f"TokenAuth(kind={self.kind!r}, endpoints={[r.url for r in self._tokens.values()]!r})"


def _bearer(header: str, token: str) -> str:
    # Only Authorization takes the scheme; the Azure management header is the bare token.
    return f"Bearer {token}" if header == "Authorization" else token


class SdkAuth(Auth):
    """databricks-sdk's unified auth (env vars, ~/.databrickscfg profiles, Azure CLI, ...).

    The SDK refreshes its own tokens; its config is built on first use because building it
    may already reach a token endpoint.
    """

    def __init__(self, host: str | None, profile: str | None) -> None:
        self._host = host
        self._profile = profile
        self._config: Any = None
        self._lock = threading.Lock()
        self._last: tuple[str, ...] = ()

    def config(self) -> Any:
        with self._lock:
            if self._config is None:
                try:
                    from databricks.sdk.core import Config
                except ImportError:
                    raise InvalidConnectionError(
                        f"auth_type {DATABRICKS_SDK!r} needs the databricks-sdk package: {SDK_EXTRA_HINT}"
                    ) from None
                self._config = Config(host=self._host, profile=self._profile)
            return self._config

    @property
    def host(self) -> str | None:
        """The workspace the SDK resolved, for connections that name only a profile."""
        return self._host or self.config().host

    def headers(self) -> dict[str, str]:
        out = dict(self.config().authenticate())
        self._last = tuple(v.split(" ", 1)[-1] for v in out.values() if v)
        return out

    async def aheaders(self) -> dict[str, str]:
        return await run_blocking(self.headers)

    def secrets(self) -> tuple[str, ...]:
        return self._last

    def __repr__(self) -> str:
        return f"SdkAuth(profile={self._profile!r})"


# --------------------------------------------------------------------------- resolution


def choose_auth_type(login: str, password: str, extras: Mapping[str, Any]) -> str:
    """The auth mode a connection asks for: ``auth_type`` if set, else inferred from its fields
    in the order the official Databricks provider uses (token, OAuth, Azure, basic, token)."""
    explicit = extras.get("auth_type")
    if explicit:
        if explicit not in AUTH_TYPES:
            raise InvalidConnectionError(f"unknown auth_type {explicit!r}; valid values: {', '.join(AUTH_TYPES)}")
        return str(explicit)
    if extras.get("token"):
        return TOKEN
    if is_true(extras.get("service_principal_oauth")):
        return OAUTH_M2M
    if extras.get("azure_tenant_id"):
        return AZURE_SP
    if login and password:
        return BASIC
    if password:
        return TOKEN
    raise InvalidConnectionError(
        "the connection has no credentials: put a personal access token in Password (Login empty) "
        "or in the extra 'token', or set auth_type"
    )


def build_auth(
    *,
    host_url: str | None,
    login: str,
    password: str,
    extras: Mapping[str, Any],
    fetch: TokenFetcher,
    check_url: Callable[[str], str],
) -> Auth:
    """The auth of a connection. ``check_url`` normalises and vets an authority URL (the
    same https / loopback-only-http rule as the workspace host)."""
    kind = choose_auth_type(login, password, extras)
    if kind == DATABRICKS_SDK:
        return SdkAuth(host_url, extras.get("profile") or None)
    if host_url is None:
        raise InvalidConnectionError("the connection has no host: set Host to the workspace URL")
    if kind == TOKEN:
        token = extras.get("token") or password
        if not token:
            raise InvalidConnectionError("auth_type 'token' needs a token in Password or in the extra 'token'")
        return StaticAuth.token(str(token))
    if not login or not password:
        needs = "a username and password" if kind == BASIC else "a client id and secret"
        raise InvalidConnectionError(f"auth_type {kind!r} needs {needs} in Login and Password")
    if kind == BASIC:
        return StaticAuth.basic(login, password)
    if kind == OAUTH_M2M:
        request = TokenRequest(
            url=f"{host_url}/oidc/v1/token",
            form={"grant_type": "client_credentials", "scope": "all-apis"},
            basic_auth=(login, password),
            key=(OAUTH_M2M, host_url, login),
        )
        return TokenAuth(kind, {"Authorization": request}, fetch, client_secret=password)
    return _azure_auth(login, password, extras, fetch, check_url)


def _azure_auth(
    client_id: str, secret: str, extras: Mapping[str, Any], fetch: TokenFetcher, check_url: Callable[[str], str]
) -> TokenAuth:
    tenant = str(extras.get("azure_tenant_id") or "").strip()
    if not tenant or "/" in tenant:
        raise InvalidConnectionError(
            "auth_type 'azure-service-principal' needs the extra 'azure_tenant_id' (a tenant id or domain)"
        )
    authority = check_url(str(extras.get("azure_ad_endpoint") or DEFAULT_AZURE_AD_ENDPOINT))
    url = f"{authority}/{tenant}/oauth2/v2.0/token"

    def request(audience: str) -> TokenRequest:
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": f"{audience}/.default",
        }
        return TokenRequest(url=url, form=form, key=(AZURE_SP, url, client_id, audience))

    tokens = {"Authorization": request(AZURE_DATABRICKS_APP_ID)}
    static: dict[str, str] = {}
    resource_id = extras.get("azure_resource_id")
    if resource_id:
        # A service principal that is not yet a workspace user is admitted with an ARM token
        # and the workspace's resource id.
        management = _AZURE_MANAGEMENT_BY_AUTHORITY.get(urlsplit(authority).hostname or "", _AZURE_MANAGEMENT_DEFAULT)
        tokens["X-Databricks-Azure-SP-Management-Token"] = request(management)
        static["X-Databricks-Azure-Workspace-Resource-Id"] = str(resource_id)
    return TokenAuth(AZURE_SP, tokens, fetch, static_headers=static, client_secret=secret)
