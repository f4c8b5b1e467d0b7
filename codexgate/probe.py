"""The container health check: `python -m codexgate.probe [/healthz|/readyz]` exits 0 when the
gateway's admin port answers 200 at that path, 1 otherwise (with the reason on stderr).

Images carry no curl; this needs only the standard library. The port is
$CODEXGATE_METRICS_PORT (default 9090), the host 127.0.0.1: the probe runs beside the gateway."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "/healthz"
    port = os.environ.get("CODEXGATE_METRICS_PORT", "9090")
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"codexgate probe: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"codexgate probe: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
