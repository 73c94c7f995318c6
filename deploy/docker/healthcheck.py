"""Container health check: GET the service's v2 health endpoint on loopback.

    python healthcheck.py ready   # /v2/health/ready (default): 200 once models are loaded and warm
    python healthcheck.py live    # /v2/health/live

Exit 0 on HTTP 200, 1 otherwise. Standard library only (the slim images have no curl).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "ready"
    if which not in ("ready", "live"):
        print(f"usage: {sys.argv[0]} [ready|live]", file=sys.stderr)
        return 2
    port = os.environ.get("RAMAN_PORT", "8000")
    url = f"http://127.0.0.1:{port}/v2/health/{which}"
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
