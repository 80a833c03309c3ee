"""A container's health probe (copied into the images as /opt/cta/healthcheck.py; no dependencies).

    python healthcheck.py [URL ...]

Each URL (default: $HEALTHCHECK_URL) must answer: http(s)://... with a 2xx status, tcp://host:port by
accepting a connection. Exit 0 if all do, 1 (with the reason on stderr) otherwise.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlparse

TIMEOUT_S = 4.0


def problem(url: str) -> str | None:
    """Why `url` is not healthy, or None."""
    parsed = urlparse(url)
    if parsed.scheme == "tcp":
        try:
            with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=TIMEOUT_S):
                return None
        except OSError as error:
            return f"{url}: {error}"
    if parsed.scheme not in ("http", "https"):
        return f"{url}: unsupported scheme (http, https or tcp)"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 (scheme checked above)
            return None if 200 <= response.status < 300 else f"{url}: HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        return f"{url}: {error}"


def main(argv: list[str]) -> int:
    urls = argv or [u for u in os.environ.get("HEALTHCHECK_URL", "").split() if u]
    if not urls:
        print("no URL to probe (pass one or set HEALTHCHECK_URL)", file=sys.stderr)
        return 1
    problems = [p for p in map(problem, urls) if p]
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
