"""Where credentials travel in HTTP headers: one list for what clients send, one for what may
carry a secret at all (client credentials plus what providers' auth adds). Every step that strips,
checks or masks credentials uses these, so they cannot drift apart."""

from __future__ import annotations

# Sent by clients (virtual keys, or a client's own credentials): none of them may reach a provider.
CLIENT_CREDENTIAL_HEADERS = (
    "authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization", "cookie",
    "openai-organization", "openai-project",
)  # fmt: skip

# Anything that may hold a secret on a flow: the above, and providers' own (SigV4's session token).
SECRET_HEADERS = (*CLIENT_CREDENTIAL_HEADERS, "x-amz-security-token")
