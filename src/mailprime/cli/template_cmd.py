"""`mailprime template`: the message templates campaigns are sent with.

A template is stored only if it compiles (syntax errors are listed with their part and line);
`check` then says everything a campaign would refuse it for (unknown merge fields, attributes a
sample contact lacks, no visible unsubscribe link, no postal address) and exits 1 if anything
is found; `preview` renders it for one contact, prints the subject and the text part, and
writes the HTML to a file to open in a browser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mailprime.cli.admin import ConfigOpt
from mailprime.cli.context import console, fail, run_with_store
from mailprime.config import Settings
from mailprime.domain.templates import Template, TemplateFields
from mailprime.marketing.template_rules import check_compliance
from mailprime.marketing.templates import (
    MAX_BODY_SOURCE,
    MAX_NAME,
    CompiledTemplate,
    Recipient,
    RenderError,
    TemplateError,
    check,
    compile_template,
    render_preview,
)
from mailprime.storage.ports import Store

template_app = typer.Typer(help="Message templates: Jinja2 subject, HTML and text for campaigns.",
                           no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The template's name.")]
ContactJsonOpt = Annotated[str | None, typer.Option(
    "--contact-json", help='A sample contact: a JSON file or inline JSON, e.g. '
    '\'{"email": "a@b.example", "name": "Ann", "attributes": {"city": "Oslo"}}\'.')]
EmailOpt = Annotated[str | None, typer.Option(
    "--email", help="Use this stored contact as the sample.")]
MAX_CONTACT_JSON = 1_048_576


def _read_source(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > 4 * MAX_BODY_SOURCE:  # UTF-8: up to 4 octets a character
            fail(f"{what} {path}: larger than {MAX_BODY_SOURCE:,} characters", 2)
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{what} {path}: {exc}", 2)


def _compile(subject: str, html: str, text: str | None) -> CompiledTemplate:
    try:
        return compile_template(subject, html, text)
    except TemplateError as exc:
        for problem in exc.problems:
            console.print(f"[red]error[/] {escape(str(problem))}")
        fail(f"the template does not compile ({len(exc.problems)} problem(s))", 1)


def _sample_from_json(text: str) -> Recipient:
    if len(text) > MAX_CONTACT_JSON:
        fail("--contact-json: at most 1 MiB", 2)
    path = Path(text)
    raw = text
    if not text.lstrip().startswith("{"):
        try:
            raw = path.read_text(encoding="utf-8")[:MAX_CONTACT_JSON + 1]
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--contact-json {text}: {exc}", 2)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"--contact-json: not JSON ({exc})", 2)
    if not isinstance(data, dict) or not isinstance(data.get("email", ""), str) \
            or not isinstance(data.get("name", ""), str) \
            or not isinstance(data.get("attributes", {}), dict):
        fail('--contact-json: an object {"email": str, "name": str, "attributes": {...}}', 2)
    return Recipient(data.get("email") or "sample@example.invalid", data.get("name", ""),
                     data.get("attributes", {}))


async def _sample(store: Store, contact_json: str | None, email: str | None) -> Recipient:
    if contact_json is not None and email is not None:
        fail("give --contact-json or --email, not both", 2)
    if email is not None:
        contact = await store.get_contact(email)
        if contact is None:
            fail(f"no contact {email}", 1)
        return Recipient(contact.email, contact.name, dict(contact.attributes), contact.id)
    if contact_json is not None:
        return _sample_from_json(contact_json)
    return Recipient("sample@example.invalid", "Sample Contact")


async def _get(store: Store, name: str) -> Template:
    template = await store.get_template_by_name(name)
    if template is None:
        fail(f"no template named {name!r}", 1)
    return template


@template_app.command("create")
def create(name: NameArg, config: ConfigOpt, *,
           subject: Annotated[str, typer.Option(help="The subject (a one-line template).")],
           html: Annotated[Path, typer.Option(help="File with the HTML template.")],
           text: Annotated[Path | None, typer.Option(
               help="File with the text template (default: made from the HTML).")] = None,
           replace: Annotated[bool, typer.Option(
               "--replace", help="Replace the template of that name if it exists.")] = False,
           ) -> None:
    """Store a template (after checking that it compiles)."""
    if not name.strip() or len(name) > MAX_NAME:
        fail(f"a name is 1 to {MAX_NAME} characters", 2)
    html_source = _read_source(html, "--html")
    text_source = _read_source(text, "--text") if text is not None else None
    _compile(subject, html_source, text_source)
    fields = TemplateFields(name, subject, html_source, text_source)

    async def act(store: Store, _: Settings) -> tuple[Template, bool]:
        existing = await store.get_template_by_name(name)
        if existing is not None and replace:
            return await store.update_template(existing.id, fields), True
        return await store.create_template(fields), False

    saved, replaced = run_with_store(config, act)
    console.print(f"template {escape(saved.name)} {'replaced' if replaced else 'created'} "
                  f"(id {saved.id}); run `mailprime template check {escape(saved.name)}`")


@template_app.command("list")
def list_templates(config: ConfigOpt) -> None:
    """List the templates by name."""

    async def act(store: Store, _: Settings) -> list[Template]:
        return list(await store.list_templates(limit=10_000))

    table = Table("id", "name", "subject", "text part", "updated (UTC)")
    found = run_with_store(config, act)
    for t in found:
        table.add_row(str(t.id), escape(t.name), escape(t.subject[:60]),
                      "given" if t.text is not None else "from HTML",
                      t.updated_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)
    console.print(f"{len(found)} template(s)")


@template_app.command("show")
def show(name: NameArg, config: ConfigOpt) -> None:
    """Print a template's subject, HTML and text sources."""

    async def act(store: Store, _: Settings) -> Template:
        return await _get(store, name)

    t = run_with_store(config, act)
    console.print(f"[bold]subject:[/] {escape(t.subject)}")
    console.print("[bold]html:[/]")
    console.print(escape(t.html), highlight=False)
    console.print("[bold]text:[/]" + (" (made from the HTML)" if t.text is None else ""))
    if t.text is not None:
        console.print(escape(t.text), highlight=False)


@template_app.command("preview")
def preview(name: NameArg, config: ConfigOpt, contact_json: ContactJsonOpt = None,
            email: EmailOpt = None,
            out: Annotated[Path | None, typer.Option(
                help="Where to write the HTML (default: NAME-preview.html here).")] = None,
            ) -> None:
    """Render a template for a sample contact: print subject and text, write the HTML."""

    async def act(store: Store, settings: Settings) -> tuple[Template, Recipient, str]:
        return (await _get(store, name), await _sample(store, contact_json, email),
                settings.marketing.postal_address)

    t, sample, postal = run_with_store(config, act)
    compiled = _compile(t.subject, t.html, t.text)
    try:
        rendered = render_preview(compiled, sample, postal_address=postal,
                                  list_name="(list)", campaign_name="(campaign)")
    except RenderError as exc:
        fail(f"cannot render for {sample.email}: {exc}", 1)
    target = out or Path(f"{''.join(c if c.isalnum() or c in '-_' else '_' for c in name)}"
                         "-preview.html")
    try:
        target.write_text(rendered.html, encoding="utf-8")
    except OSError as exc:
        fail(f"--out {target}: {exc}", 2)
    console.print(f"[bold]Subject:[/] {escape(rendered.subject)}")
    console.print("[bold]Text part:[/]")
    console.print(escape(rendered.text), highlight=False)
    console.print(f"HTML part written to {escape(str(target))}")


@template_app.command("check")
def check_cmd(name: NameArg, config: ConfigOpt, contact_json: ContactJsonOpt = None,
              email: EmailOpt = None) -> None:
    """Everything a campaign would refuse the template for; exit status 1 if anything."""

    async def act(store: Store, settings: Settings) -> tuple[Template, Recipient, str]:
        return (await _get(store, name), await _sample(store, contact_json, email),
                settings.marketing.postal_address)

    t, sample, postal = run_with_store(config, act)
    compiled = _compile(t.subject, t.html, t.text)
    lines = [str(p) for p in check(compiled, sample, postal_address=postal or "x")]
    lines += [str(p) for p in check_compliance(compiled, postal_address=postal, sample=sample)]
    for line in lines:
        console.print(f"[red]problem[/] {escape(line)}")
    if lines:
        fail(f"template {name!r}: {len(lines)} problem(s)", 1)
    mode = "once" if compiled.html_inlined else "after each render"
    console.print(f"template {escape(name)}: no problems (CSS inlined {mode}; text part "
                  f"{'given' if compiled.text_given else 'made from the HTML'})")


@template_app.command("delete")
def delete(name: NameArg, config: ConfigOpt) -> None:
    """Delete a template."""

    async def act(store: Store, _: Settings) -> bool:
        return await store.delete_template((await _get(store, name)).id)

    run_with_store(config, act)
    console.print(f"template {escape(name)} deleted")
