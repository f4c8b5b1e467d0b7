"""Where credentials travel in HTTP headers: one list for what clients send, one for what may
carry a secret at all (client credentials plus what providers' auth adds). Every step that strips,
checks or masks credentials uses these, so they cannot drift apart."""

from __future__ import annotations

from mitmproxy.http import Headers

# Sent by clients (virtual keys, or a client's own credentials): none of them may reach a provider.
CLIENT_CREDENTIAL_HEADERS = (
    "authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization", "cookie",
    "openai-organization", "openai-project",
)  # fmt: skip

# Anything that may hold a secret on a flow: the above, and providers' own (SigV4's session token).
SECRET_HEADERS = (*CLIENT_CREDENTIAL_HEADERS, "x-amz-security-token")

_CLIENT_CREDENTIAL_FIELD_NAMES = frozenset(name.encode() for name in CLIENT_CREDENTIAL_HEADERS)


def strip_client_credentials(headers: Headers) -> None:
    """Removes every client credential header in one pass over the fields (mitmproxy's `pop`
    scans all fields once per name: eight scans a request)."""
    fields = headers.fields
    kept = tuple(field for field in fields if field[0].lower() not in _CLIENT_CREDENTIAL_FIELD_NAMES)
    if len(kept) != len(fields):
        headers.fields = kept


def replace_headers(headers: Headers, values: dict[str, str]) -> None:
    """Sets each of `values` (replacing any field of the same name) in one pass over the fields."""
    if values:
        fields = [(name.lower().encode(), value.encode("utf-8", "surrogateescape")) for name, value in values.items()]
        replace_header_fields(headers, fields)


def replace_header_fields(headers: Headers, fields: list[tuple[bytes, bytes]]) -> None:
    """`replace_headers` for fields already encoded, names in lower case (per-request headers
    built from constants skip the encoding)."""
    if not fields:
        return
    names = frozenset(name for name, _ in fields)
    kept = tuple(field for field in headers.fields if field[0].lower() not in names)
    headers.fields = kept + tuple(fields)
