"""The `mailprime` command."""

from __future__ import annotations

import typer

from mailprime import __version__
from mailprime.cli.admin import account_app, alias_app, domain_app
from mailprime.cli.bounce_cmd import bounce_app
from mailprime.cli.dkim_cmd import dkim_app
from mailprime.cli.doctor_cmd import doctor
from mailprime.cli.init_cmd import init
from mailprime.cli.queue_cmd import queue_app
from mailprime.cli.serve_cmd import serve
from mailprime.cli.suppression_cmd import suppression_app
from mailprime.cli.tls_report_cmd import tls_report

app = typer.Typer(
    name="mailprime",
    help="mailprime — send, receive, store and serve mail for your own domains.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("init")(init)
app.command("serve")(serve)
app.add_typer(domain_app, name="domain")
app.add_typer(account_app, name="account")
app.add_typer(alias_app, name="alias")
app.add_typer(queue_app, name="queue")
app.add_typer(dkim_app, name="dkim")
app.add_typer(bounce_app, name="bounce")
app.add_typer(suppression_app, name="suppression")
app.command("doctor")(doctor)
app.command("tls-report")(tls_report)


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
