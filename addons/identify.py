"""Identifies the virtual key of a governed request, from its head alone (`requestheaders`).

Looked for in `Authorization: Bearer`, `x-api-key`, `api-key`, and the proxy credentials
(`Proxy-Authorization` on the request or on the CONNECT that opened the connection; the
password is the key, or the user name when the password is empty).
"""

from __future__ import annotations

import base64
import binascii
import logging
import weakref
from collections.abc import Mapping

from mitmproxy import connection, http

from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import Decision, GatewayRequest, refuse, state_of
from codexgate.headers import header_values, single_values
from codexgate.policies.keys import hash_key

logger = logging.getLogger(__name__)

CLIENT_CREDENTIALS_KEY = "codexgate.client_credentials"


def key_from_proxy_authorization(value: str) -> str | None:
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password or user or None


# The headers a virtual key may come in (read in one pass over the fields: `key_candidates`).
KEY_FIELDS = frozenset({b"authorization", b"x-api-key", b"api-key", b"proxy-authorization"})


def key_candidates(headers: http.Headers, state: GatewayRequest | None = None) -> list[str]:
    """Every credential the request carries, in order of preference (`state`: the governed
    request's, whose reading of the head is shared)."""
    candidates = []
    by_name = state.head_values(headers.fields) if state is not None else single_values(headers.fields)
    if by_name is None:  # a name given twice: its values folded as `Headers.get` folds them
        values = header_values(headers, KEY_FIELDS)
    else:
        values = {name: by_name[name].decode("utf-8", "surrogateescape") for name in KEY_FIELDS if name in by_name}
    authorization = values.get(b"authorization")
    if authorization is not None and authorization[:7].lower() == "bearer ":
        bearer = authorization[7:].strip()
        if bearer:
            candidates.append(bearer)
    for name in (b"x-api-key", b"api-key"):
        value = values.get(name)
        if value and (value := value.strip()):
            candidates.append(value)
    proxy_authorization = values.get(b"proxy-authorization")
    if proxy_authorization is not None:
        proxy_key = key_from_proxy_authorization(proxy_authorization)
        if proxy_key:
            candidates.append(proxy_key)
    return candidates


def flow_key_candidates(flow: http.HTTPFlow, connect_keys: Mapping[connection.Client, str] | None = None) -> list[str]:
    """Every credential a flow carries, in order of preference: its headers (or what SecretMask set
    aside from them, under mitmweb), then the proxy credentials its CONNECT gave (`connect_keys`)."""
    saved = flow.metadata.get(CLIENT_CREDENTIALS_KEY)
    headers = http.Headers([(n.encode(), v.encode()) for n, v in saved]) if saved else flow.request.headers
    candidates = key_candidates(headers, None if saved else state_of(flow))
    connect_key = connect_keys.get(flow.client_conn) if connect_keys is not None else None
    if connect_key:
        candidates.append(connect_key)
    return candidates


class Identify:
    def __init__(self) -> None:
        # Proxy credentials given on CONNECT, per client connection (gone with the connection).
        self._connect_keys: weakref.WeakKeyDictionary[connection.Client, str] = weakref.WeakKeyDictionary()
        # Until a CONNECT gave one, no flow is looked up in `_connect_keys` (four calls a request; on
        # the gateway listener there are no CONNECTs at all).
        self._any_connect_key = False

    def http_connect(self, flow: http.HTTPFlow) -> None:
        value = flow.request.headers.get("proxy-authorization")
        if value:
            key = key_from_proxy_authorization(value)
            if key:
                self._connect_keys[flow.client_conn] = key
                self._any_connect_key = True

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """At the request head, before any of the body is read: a request without a valid key is
        answered at once and its body discarded as it arrives, never decoded or parsed."""
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None:
            return
        candidates = flow_key_candidates(flow, self._connect_keys if self._any_connect_key else None)
        if not candidates:
            refuse(
                flow,
                error_response(
                    401,
                    "missing_api_key",
                    "no virtual key: send it as 'Authorization: Bearer <key>' (CODEX_API_KEY for Codex)",
                ),
                Decision.MISSING_KEY,
            )
            return
        # A client behind a credentialed proxy may send a placeholder bearer: the first known key wins.
        keys_by_hash = state.policy.keys_by_hash
        record = None
        for candidate in candidates:
            record = keys_by_hash.get(hash_key(candidate))
            if record:
                break
        else:
            record = None
        if record is None:
            refuse(
                flow,
                error_response(401, "invalid_api_key", "unknown virtual key; ask your platform team for one"),
                Decision.UNKNOWN_KEY,
            )
            return
        state.key = record
        team = state.policy.policy.teams.get(record.team)
        state.team = record.team
        state.org = team.org if team else None
