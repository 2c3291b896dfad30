"""`mailprime serve`: run the listeners and the delivery worker until SIGTERM/SIGINT."""

from __future__ import annotations

from typing import Annotated

import typer

from mailprime.cli.context import config_option, settings_from


def serve(
    config: Annotated[str, typer.Option("--config", "-c", help="Path to mailprime.toml.",
                                        default_factory=config_option)],
    workers: Annotated[int | None, typer.Option(help="Worker processes (0: one per core).")] = None,
) -> None:
    """Start the listeners (SMTP MX and submission, IMAP, POP3, HTTP) and outbound delivery."""
    settings = settings_from(config)  # first: a bad config is reported without the slow imports
    from mailprime.runtime import run_server  # noqa: PLC0415  (imported late: keeps `--help` fast)

    if workers is not None:
        settings.server.workers = workers
    raise typer.Exit(run_server(settings))
