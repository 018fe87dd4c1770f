"""Docker HEALTHCHECK: exit 0 when GET /health answers 2xx, 1 otherwise (stdlib only)."""

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("DIFFUSERVE_PORT", "8000")
    url = os.environ.get("DIFFUSERVE_HEALTH_URL", f"http://127.0.0.1:{port}/health")
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (loopback URL)
            return 0 if 200 <= response.status < 300 else 1
    except OSError as e:  # refused, timeout, HTTP error status
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
