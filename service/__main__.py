"""`python -m service [--host H] [--port P]` (console script `raman-service`): run uvicorn.

Settings come from `RAMAN_*` environment variables; `--host`/`--port`/`--log-level` override
them. There is deliberately no `--reload`: models are reloaded through the API instead.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import uvicorn

from service.settings import get_settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults from the settings)."""
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="raman-service",
        description="Run the Raman identification HTTP service (settings: RAMAN_* env variables).",
    )
    parser.add_argument("--host", default=settings.host, help="interface to bind")
    parser.add_argument("--port", type=int, default=settings.port, help="TCP port")
    parser.add_argument(
        "--log-level",
        default=settings.log_level,
        choices=["debug", "info", "warning", "error", "critical"],
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Start the HTTP server; returns after a clean shutdown (SIGINT/SIGTERM)."""
    args = parse_args(argv)
    # The app factory reads its settings from the environment: pass the override on.
    os.environ["RAMAN_LOG_LEVEL"] = args.log_level
    get_settings.cache_clear()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        "service.app:build_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=get_settings().graceful_shutdown_s,
        access_log=False,  # the metrics middleware counts every request; logs stay readable
    )


if __name__ == "__main__":
    main()
