"""Where credentials travel in HTTP headers, and stripping or replacing them in one pass.

Every step that strips, checks or masks credentials uses the lists `codexgate.providers.registry`
builds from these and from every provider family's own, so they cannot drift apart."""

from __future__ import annotations

from mitmproxy.http import Headers

# Sent by any client as a credential (its virtual key, proxy credentials, a browser's cookie).
# Provider families add the headers their own keys travel in (`ProviderFamily.secret_headers`):
# the addons take the full lists from `codexgate.providers.registry` and pass them in here, so
# this core module names no provider.
CLIENT_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")


def field_names(names: tuple[str, ...]) -> frozenset[bytes]:
    """Header names as `strip_client_credentials` matches them (lower-case bytes)."""
    return frozenset(name.lower().encode() for name in names)


def strip_client_credentials(headers: Headers, fields: frozenset[bytes]) -> None:
    """Removes every header named in `fields` (see `field_names`) in one pass over the fields
    (mitmproxy's `pop` scans all fields once per name: eight scans a request)."""
    current = headers.fields
    kept = tuple(field for field in current if field[0].lower() not in fields)
    if len(kept) != len(current):
        headers.fields = kept


def replace_headers(headers: Headers, values: dict[str, str], removing: frozenset[bytes] = frozenset()) -> None:
    """Sets each of `values` (replacing any field of the same name) and removes every field named
    in `removing` (lower-case bytes), in one pass over the fields."""
    fields = [(name.lower().encode(), value.encode("utf-8", "surrogateescape")) for name, value in values.items()]
    replace_header_fields(headers, fields, removing)


def replace_header_fields(
    headers: Headers, fields: list[tuple[bytes, bytes]], removing: frozenset[bytes] = frozenset()
) -> None:
    """`replace_headers` for fields already encoded, names in lower case (per-request headers
    built from constants skip the encoding)."""
    if not fields and not removing:
        return
    # List comprehensions, not generators: run inline, without a generator frame resumed per field.
    names = frozenset([name for name, _ in fields]) | removing if fields else removing
    kept = tuple([field for field in headers.fields if field[0].lower() not in names])
    headers.fields = kept + tuple(fields)


def header_values(headers: Headers, names: frozenset[bytes]) -> dict[bytes, str]:
    """For each of `names` (lower-case bytes) present: its value as `headers.get(name)` gives it
    (several fields of one name folded with ", "), from one pass over the fields. mitmproxy's
    `Headers.get` scans and lower-cases every field per call (several µs a call)."""
    found: dict[bytes, list[str]] = {}
    for name, value in headers.fields:
        lowered = name.lower()
        if lowered in names:
            found.setdefault(lowered, []).append(value.decode("utf-8", "surrogateescape"))
    return {name: ", ".join(values) for name, values in found.items()}


def header_value(headers: Headers, name: bytes) -> str | None:
    """`headers.get(name)` for one lower-case bytes name, None when absent (one pass, no
    `_kconv`/`get_all` frames per field)."""
    values = [value for field, value in headers.fields if field.lower() == name]
    if not values:
        return None
    return ", ".join(value.decode("utf-8", "surrogateescape") for value in values)


def has_header(headers: Headers, name: bytes) -> bool:
    """`name in headers` for one lower-case bytes name."""
    return any(field.lower() == name for field, _ in headers.fields)


# -- header fields by call count -------------------------------------------------------------------
# The steps read a few header fields of every request and answer. mitmproxy's `Headers.get` and a
# loop lower-casing each field cost a call or more per field, per lookup; these cost a fixed few C
# calls however many fields there are: the names joined, lower-cased and split once.


def lowered_names(fields: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """Every field name in lower case, joined by b"\\n": `name in lowered_names(fields)` is False
    only where no field is called `name` (a True may also be part of a longer name: look again)."""
    return b"\n".join([name for name, _ in fields]).lower()


def single_values(fields: tuple[tuple[bytes, bytes], ...]) -> dict[bytes, bytes] | None:
    """Each field's raw value by its lower-case name, where no name repeats; None otherwise (a name
    given twice, or one holding b"\\n": the caller reads those field by field). A governed request's
    steps share one reading of its head: `GatewayRequest.head_values`."""
    names = b"\n".join([name for name, _ in fields]).lower().split(b"\n")
    by_name = dict(zip(names, [value for _, value in fields], strict=False))
    return by_name if len(by_name) == len(fields) == len(names) else None
