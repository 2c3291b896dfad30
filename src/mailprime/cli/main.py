"""The `mailprime` command."""

from __future__ import annotations

import typer

from mailprime import __version__
from mailprime.cli.admin import account_app, alias_app, domain_app
from mailprime.cli.apikey_cmd import apikey_app
from mailprime.cli.bounce_cmd import bounce_app
from mailprime.cli.campaign_cmd import campaign_app
from mailprime.cli.contact_cmd import contact_app
from mailprime.cli.demo_cmd import demo
from mailprime.cli.dkim_cmd import dkim_app
from mailprime.cli.doctor_cmd import doctor
from mailprime.cli.init_cmd import init
from mailprime.cli.list_cmd import list_app
from mailprime.cli.queue_cmd import queue_app
from mailprime.cli.retention_cmd import retention_app
from mailprime.cli.segment_cmd import segment_app
from mailprime.cli.serve_cmd import serve
from mailprime.cli.suppression_cmd import suppression_app
from mailprime.cli.template_cmd import template_app
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
app.command("demo")(demo)
app.add_typer(domain_app, name="domain")
app.add_typer(account_app, name="account")
app.add_typer(alias_app, name="alias")
app.add_typer(queue_app, name="queue")
app.add_typer(dkim_app, name="dkim")
app.add_typer(bounce_app, name="bounce")
app.add_typer(suppression_app, name="suppression")
app.add_typer(contact_app, name="contact")
app.add_typer(list_app, name="list")
app.add_typer(segment_app, name="segment")
app.add_typer(retention_app, name="retention")
app.add_typer(template_app, name="template")
app.add_typer(campaign_app, name="campaign")
app.add_typer(apikey_app, name="apikey")
app.command("doctor")(doctor)
app.command("tls-report")(tls_report)


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
