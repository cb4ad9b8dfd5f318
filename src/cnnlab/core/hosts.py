"""Who may reach a local HTTP service (`cnnlab serve`, `cnnlab board`): loopback by default, a token
for any other address, and the Host header names a loopback service answers to."""

from __future__ import annotations

import ipaddress
import re

from cnnlab.core.errors import CnnlabError

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,256}")  # what an Authorization header, a cookie and ?token= carry as is


def check_bind(host: str, token: str | None, no_auth: bool) -> None:
    """A service reachable from other machines needs a token, or an explicit --no-auth."""
    if token is not None and not token.strip():
        raise CnnlabError("--token is empty; give a secret string (or leave --token out on 127.0.0.1)")
    if token is not None and not TOKEN.fullmatch(token):
        raise CnnlabError(
            "--token may hold letters, digits and . _ ~ + / = - only (1 to 256 of them): a header, a cookie and a "
            "URL carry those unchanged"
        )
    if not is_loopback(host) and token is None and not no_auth:
        raise CnnlabError(
            f"--host {host} makes the service reachable from other machines: give --token SECRET "
            f"(clients send 'Authorization: Bearer SECRET'), or --no-auth to serve it open"
        )


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> frozenset[str] | None:
    """The Host header names the service answers: on a loopback address its local names (and
    ``extra``), so that a page elsewhere that rebinds its own name to 127.0.0.1 is refused; on any
    other address only ``extra`` when given, else any (clients name it as they reach it)."""
    names = {h.strip().lower().strip("[]") for h in extra if h.strip()}
    if is_loopback(host):
        return frozenset(names | set(LOCAL_NAMES) | {host.lower().strip("[]")})
    return frozenset(names) if names else None


def host_name(value: bytes) -> str:
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):  # [::1]:8000
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text
