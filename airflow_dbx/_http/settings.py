"""An Airflow connection's fields -> the workspace URL, credentials and transport settings."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_dbx.auth import Auth, SdkAuth, build_auth, is_true
from airflow_dbx.errors import InvalidConnectionError

if TYPE_CHECKING:
    from airflow_dbx.tokens import TokenFetcher

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0
_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class Settings:
    """What every request to one workspace needs."""

    base_url: str
    auth: Auth
    timeout: float
    verify: bool | str = field(repr=False)
    proxies: Mapping[str, str] = field(repr=False)

    def proxy_for(self, url: str) -> str | None:
        return self.proxies.get("https" if url.startswith("https:") else "http")


def read_settings(conn: Any, fetch: TokenFetcher) -> Settings:
    """The settings of an Airflow connection; ``fetch`` posts token requests for OAuth modes."""
    extras = extras_of(conn.extra)
    raw_host = extras.get("host") or conn.host
    base_url = parse_host(raw_host, conn.port) if raw_host else None
    auth = build_auth(
        host_url=base_url,
        login=conn.login or "",
        password=conn.password or "",
        extras=extras,
        fetch=fetch,
        check_url=parse_host,
    )
    if base_url is None:
        sdk_host = auth.host if isinstance(auth, SdkAuth) else None
        if not sdk_host:
            raise InvalidConnectionError(f"connection {conn.conn_id!r} has no host: set Host to the workspace URL")
        base_url = parse_host(sdk_host)
    verify = verify_from_extras(extras, conn.conn_id)
    return Settings(base_url, auth, timeout_from_extras(extras), verify, proxies_from_extras(extras))


def parse_host(raw: str | None, port: int | None = None) -> str:
    """``https://host[:port]`` from a connection's host (and port), or InvalidConnectionError.

    Accepts a bare host, ``https://host``, a port in either place, one trailing slash.
    Refuses paths, queries, credentials in the URL, other schemes, and ``http://`` to any
    host that is not loopback, where a token would cross a network in clear.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidConnectionError(
            "no host: set Host to the workspace URL, e.g. https://adb-1234.5.azuredatabricks.net"
        )
    if "://" not in text:
        text = f"https://{text}"
    try:
        parts = urlsplit(text)
        url_port = parts.port
    except ValueError as exc:
        raise InvalidConnectionError(f"host {_safe(text)!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    _check_url_parts(parts, text)
    if port is not None and url_port is not None and int(port) != url_port:
        raise InvalidConnectionError(f"the host says port {url_port} but the Port field says {port}: give one")
    final_port = url_port if url_port is not None else port
    if final_port is not None and not 0 < int(final_port) < 65536:
        raise InvalidConnectionError(f"port {final_port} is out of range")
    hostname = (parts.hostname or "").lower()
    _check_hostname(hostname)
    if scheme == "http" and not _is_loopback(hostname):
        raise InvalidConnectionError(
            f"plain http:// is refused for {hostname}: the token would cross the network unencrypted; "
            "use https:// (http is allowed only for loopback hosts such as 127.0.0.1, ::1 or localhost)"
        )
    netloc = f"[{hostname}]" if ":" in hostname else hostname
    return f"{scheme}://{netloc}" + (f":{int(final_port)}" if final_port is not None else "")


def _check_url_parts(parts: Any, text: str) -> None:
    if parts.scheme.lower() not in ("https", "http"):
        raise InvalidConnectionError(f"host scheme {parts.scheme!r} is not supported: use https://")
    if parts.username is not None or parts.password is not None:
        raise InvalidConnectionError("host must not carry credentials (user@host): put them in Login/Password")
    if not parts.hostname:
        raise InvalidConnectionError(f"host {_safe(text)!r} names no server")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        extra = (
            parts.path + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
        )
        raise InvalidConnectionError(
            f"host must be the workspace URL without a path or query, got {extra!r} after the host name: "
            f"use {parts.scheme.lower()}://{parts.netloc}"
        )


def _check_hostname(hostname: str) -> None:
    # urlsplit takes almost anything as a host; refuse what requests would choke on later
    # (a bare urllib3 error) or silently reinterpret (a backslash becomes part of the path).
    if ":" in hostname:
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise InvalidConnectionError(f"Host '{hostname}' is not a valid IPv6 address") from None
        return
    for char in hostname:
        if not (char.isalnum() or char in "-._"):
            raise InvalidConnectionError(f"Host '{hostname}' contains invalid character '{char}'")
    labels = hostname.removesuffix(".").split(".")
    if "" in labels or any(len(label) > 63 for label in labels):
        raise InvalidConnectionError(f"Host '{hostname}' has an empty or over-long label between its dots")


def _is_loopback(hostname: str) -> bool:
    if hostname in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _safe(text: str) -> str:
    # A malformed host might still hold user:secret@; never echo that part.
    return text.rsplit("@", 1)[-1]


def extras_of(raw: str | None) -> dict[str, Any]:
    """A connection's extras; an Extra that is not a JSON object is an error, not ``{}``."""
    if not raw or not raw.strip():
        return {}
    try:
        extras = json.loads(raw)
    except ValueError as exc:
        # Its text may hold secrets: say where it breaks, never what it says.
        where = f"{getattr(exc, 'msg', exc)} at position {getattr(exc, 'pos', '?')}"
        raise InvalidConnectionError(f"the connection's extra is not valid JSON ({where})") from None
    if not isinstance(extras, dict):
        raise InvalidConnectionError(f"the connection's extra must be a JSON object, got a {type(extras).__name__}")
    return extras


def timeout_from_extras(extras: Mapping[str, Any]) -> float:
    raw = extras.get("timeout_seconds")
    if raw in (None, ""):
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = 0.0
    if not value > 0:
        raise InvalidConnectionError(f"timeout_seconds must be a positive number of seconds, got {raw!r}")
    return value


def proxies_from_extras(extras: Mapping[str, Any]) -> dict[str, str]:
    raw = extras.get("proxies")
    if raw in (None, "", {}):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, Mapping):
        raise InvalidConnectionError('proxies must be a JSON object such as {"https": "http://proxy:3128"}')
    return {str(k): str(v) for k, v in raw.items()}


def verify_from_extras(extras: Mapping[str, Any], conn_id: str) -> bool | str:
    """requests' ``verify``: True, False (``verify_ssl`` off), or the path of ``ca_bundle``."""
    if "verify_ssl" in extras and extras["verify_ssl"] not in (None, "") and not is_true(extras["verify_ssl"]):
        log.warning("TLS certificate verification is off for connection %r: it is open to interception", conn_id)
        return False
    bundle = extras.get("ca_bundle")
    if bundle:
        if not os.path.isfile(str(bundle)):
            raise InvalidConnectionError(f"ca_bundle {bundle!r} is not a readable file")
        return str(bundle)
    return True
