"""Where Bedrock requests go and how they are authenticated: the Converse / ConverseStream URL,
SigV4 (botocore) over exactly the bytes sent, or a Bedrock API key. (The runtime endpoint of a
region is the policy's `BedrockProvider.endpoint`.)"""

from __future__ import annotations

from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SIGNING_NAME = "bedrock"  # the service model's signingName (the host says bedrock-runtime)
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"


def request_target(base_url: str, upstream_model: str, stream: bool) -> tuple[str, dict[str, str]]:
    """URL for Converse or ConverseStream, and the fixed headers (no credentials).

    The model id is a URI label: Bedrock ids carry ':' (`...-v1:0`) and ARNs carry ':' and '/',
    so it is percent-encoded whole, as botocore does; sign and send this exact URL.
    """
    operation = "converse-stream" if stream else "converse"
    url = f"{base_url.rstrip('/')}/model/{quote(upstream_model, safe='')}/{operation}"
    accept = EVENTSTREAM_CONTENT_TYPE if stream else "application/json"
    return url, {"content-type": "application/json", "accept": accept}


def auth_headers(secret: str) -> dict[str, str]:
    """A Bedrock API key (the service model's httpBearerAuth scheme) travels as a bearer token."""
    return {"authorization": f"Bearer {secret}"}


def sign_request(
    url: str, body: bytes, region: str, access_key: str, secret_key: str, session_token: str | None = None
) -> dict[str, str]:
    """SigV4 headers for POSTing `body` to `url` (authorization, x-amz-date, content-type, and
    x-amz-security-token for temporary credentials). Reads the clock; otherwise pure."""
    request = AWSRequest(method="POST", url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(access_key, secret_key, session_token), SIGNING_NAME, region).add_auth(request)
    return {name.lower(): str(value) for name, value in request.headers.items()}
