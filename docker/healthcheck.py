"""Container health check: exit 0 when the service in this container is ready.

Images built from `python:3.11-slim` or the CUDA runtime carry no curl, so the
image's HEALTHCHECK runs this with the service's own interpreter. It reads the
same `RESNET_SERVE_HOST` and `RESNET_SERVE_PORT` as the service, so a port
changed at run time is still the one probed.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0

# A wildcard listen address is not a destination: probe loopback instead.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def readiness_url() -> str:
    host = os.environ.get("RESNET_SERVE_HOST", "0.0.0.0")
    port = os.environ.get("RESNET_SERVE_PORT", "8000")
    if host in _WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/health/ready"


def main() -> int:
    try:
        with urllib.request.urlopen(readiness_url(), timeout=TIMEOUT_S) as answer:
            return 0 if answer.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
