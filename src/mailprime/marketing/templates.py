"""Message templates: compile once per campaign, check before sending, render per recipient.

Theory of operation
-------------------
A template has three parts: a subject, an HTML body and, optionally, a text body. Each is a
Jinja2 template run in the sandbox of marketing.template_sandbox (limits on steps, value sizes
and output there). The HTML part autoescapes, so a contact named "<script>" is shown, not run;
the subject and text parts do not (they are not HTML, and the subject is encoded for its header
by the message builder).

Everything that can go wrong with a template is found before a campaign starts, never halfway
through it:

* `compile_template` parses the three parts and reports every syntax error with its part and
  line (TemplateError, all problems at once, not the first only);
* `check` then looks for merge fields that are not known (a name other than the ones below, in
  any branch: found on the syntax tree, with its line), for `attributes.x` the sample contact
  lacks and nothing guards (`| default(...)` or `is defined`), and renders the template with a
  sample contact; StrictUndefined makes an unknown field an error, whose line comes from the
  traceback Jinja rewrites to template lines.

The merge fields: `email`, `name`, `attributes` (the contact's own, `attributes.city`),
`list.name`, `campaign.name`, `unsubscribe_url` (the signed one-click link of this recipient)
and `postal_address` (the sender's, CAN-SPAM).

Speed: a campaign compiles once and renders per recipient. CSS is inlined into the template
source once and the text alternative derived from it once when the Jinja constructs allow it
(marketing.template_html says when); otherwise both happen after each render.
"""

from __future__ import annotations

import contextlib
import re
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from types import CodeType, MappingProxyType

import markupsafe
from jinja2 import Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import TemplateError as JinjaError
from jinja2.exceptions import UndefinedError

from mailprime.domain.errors import DomainError
from mailprime.domain.ids import ContactId
from mailprime.marketing.template_html import html_to_text, inline_css, inline_source, text_source
from mailprime.marketing.template_sandbox import (
    MAX_OUTPUT,
    TEMPLATE_GLOBALS,
    TemplateLimitError,
    compile_code,
    make_environment,
    start_budget,
)

# Source sizes, in characters. RFC 5322 2.1.1: a header line is at most 998 characters, and a
# subject template longer than that is certainly a mistake. An HTML body past 256 KiB is too:
# Gmail clips a message body at 102 KB.
MAX_SUBJECT_SOURCE = 998
MAX_BODY_SOURCE = 262_144
MAX_NAME = 200  # a template's name

PARTS = ("subject", "html", "text")
MERGE_FIELDS = frozenset({"email", "name", "attributes", "list", "campaign", "unsubscribe_url",
                          "postal_address"})
_KNOWN = MERGE_FIELDS | set(TEMPLATE_GLOBALS)
_GUARDS = frozenset({"default", "d"})
_GUARD_TESTS = frozenset({"defined", "undefined"})

_ENV = make_environment()
_escape_text: Callable[[str], str]
try:  # markupsafe's C escaping of a str, which markupsafe.escape calls (see _escape)
    from markupsafe._speedups import _escape_inner as _escape_text
except ImportError:  # pragma: no cover - markupsafe without its C speedups
    def _escape_text(text: str) -> str:
        return str(markupsafe.escape(text))
# The globals as a plain dict, not make_globals' ChainMap over the environment's: each render's
# context copies them and takes their keys, which on a ChainMap runs Python code (a third of a
# short part's render). The environment's globals are set once, in make_environment, so a copy
# taken now is what the ChainMap would show.
_GLOBALS: dict[str, object] = dict(_ENV.make_globals(None))
_NO_ATTRIBUTE = re.compile(r"has no attribute '([^']*)'")
_UNDEFINED = re.compile(r"^'([^']*)' is undefined")


@dataclass(frozen=True, slots=True)
class TemplateSource:
    subject: str
    html: str
    text: str | None = None  # None: made from the HTML


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    part: str  # subject, html or text
    line: int
    message: str
    name: str = ""  # the merge field concerned, when there is one

    def __str__(self) -> str:
        return f"{self.part}, line {self.line}: {self.message}"


class TemplateError(DomainError):
    """A template cannot be used; `problems` says where and why (each with part and line)."""

    http_status = 422

    def __init__(self, problems: list[TemplateProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Whom one message goes to: the contact's address, name and attributes."""

    email: str
    name: str = ""
    attributes: Mapping[str, object] = field(default_factory=dict)
    contact_id: ContactId | None = None


@dataclass(frozen=True, slots=True)
class MergeData:
    """Everything a template may show for one recipient."""

    recipient: Recipient
    unsubscribe_url: str = ""
    postal_address: str = ""
    list_name: str = ""
    campaign_name: str = ""

    def variables(self) -> dict[str, object]:
        r = self.recipient
        attributes = r.attributes if isinstance(r.attributes, dict) else dict(r.attributes)
        return {"email": r.email, "name": r.name, "attributes": attributes,
                "list": {"name": self.list_name}, "campaign": {"name": self.campaign_name},
                "unsubscribe_url": self.unsubscribe_url, "postal_address": self.postal_address}


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True, eq=False)
class CompiledTemplate:
    source: TemplateSource
    subject: Template
    html_raw: Template  # the HTML as written: line numbers of errors refer to it
    html: Template  # what renders: CSS already inlined when `html_inlined`
    text: Template | None  # None: html2text after each render
    html_inlined: bool
    text_given: bool
    trees: Mapping[str, nodes.Template]


class RenderError(DomainError):
    """One recipient's message could not be rendered (the template was checked with another
    sample); the campaign records it for this recipient and goes on."""

    http_status = 422

    def __init__(self, problem: TemplateProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


# ---- compiling --------------------------------------------------------------------------------

def _escape(value: object) -> str:
    """markupsafe.escape for the output of a `{{ }}` in an autoescaped part: for a plain str,
    the same text, without the Markup object around it (a Python call and a Python __new__
    each time, ~0.4 us: several per message). Jinja only joins what it writes there (the
    part's chunks, or a buffer that it wraps in Markup itself), so the type is not seen."""
    if type(value) is str:
        return _escape_text(value)
    return markupsafe.escape(value)


def _template(source: str, part: str) -> Template:
    code = compile_code(_ENV, source, part)
    template = _ENV.template_class.from_code(_ENV, code, dict(_GLOBALS), None)
    # The compiled module's own `escape` (which its code uses only for what it outputs) is
    # replaced by _escape in that module's namespace, never in Jinja's.
    namespace = template.root_render_func.__globals__
    if namespace.get("escape") is markupsafe.escape:
        namespace["escape"] = _escape
    return template


def _parse(source: str, part: str, problems: list[TemplateProblem]) -> nodes.Template | None:
    try:
        return _ENV.parse(source, name=part, filename=f"<{part}>")
    except TemplateSyntaxError as exc:
        problems.append(TemplateProblem(part, exc.lineno or 1, exc.message or "syntax error"))
        return None


def compile_template(subject: str, html: str, text: str | None = None) -> CompiledTemplate:
    """Compiles the three parts; TemplateError lists every syntax error and size problem."""
    source = TemplateSource(subject, html, text)
    problems: list[TemplateProblem] = []
    if not subject.strip():
        problems.append(TemplateProblem("subject", 1, "the subject is empty"))
    if "\r" in subject or "\n" in subject:
        problems.append(TemplateProblem("subject", 1, "the subject must be one line"))
    for part, value, limit in (("subject", subject, MAX_SUBJECT_SOURCE),
                               ("html", html, MAX_BODY_SOURCE), ("text", text, MAX_BODY_SOURCE)):
        if value is not None and len(value) > limit:
            problems.append(TemplateProblem(part, 1, f"{len(value):,} characters; at most {limit:,}"))
    if not html.strip():
        problems.append(TemplateProblem("html", 1, "the HTML body is empty"))
    if problems:
        raise TemplateError(problems)
    trees = {part: tree for part, value in (("subject", subject), ("html", html), ("text", text))
             if value is not None and (tree := _parse(value, part, problems)) is not None}
    if problems:
        raise TemplateError(problems)
    html_raw = _template(html, "html")
    html_template, inlined = html_raw, False
    if (once := inline_source(html)) is not None:
        # When the inlined source does not compile, CSS is inlined after each render instead.
        with contextlib.suppress(TemplateSyntaxError):
            html_template, inlined = _template(once, "html"), True
    text_template = _template(text, "text") if text is not None else None
    if text is None and (derived := text_source(html)) is not None:
        with contextlib.suppress(TemplateSyntaxError):
            text_template = _template(derived, "text")
    return CompiledTemplate(source=source, subject=_template(subject, "subject"),
                            html_raw=html_raw, html=html_template, text=text_template,
                            html_inlined=inlined, text_given=text is not None,
                            trees=MappingProxyType(trees))


# ---- rendering --------------------------------------------------------------------------------

def _line_of(exc: BaseException, part: str) -> int:
    """The template line of a render error, from the traceback Jinja rewrote."""
    line = 1
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == f"<{part}>" and frame.lineno:
            line = frame.lineno
    return line


def _message(exc: BaseException) -> tuple[str, str]:
    """(text, merge field name) of a render error."""
    if isinstance(exc, UndefinedError):
        text = str(exc.message or exc)
        if m := _NO_ATTRIBUTE.search(text):
            return f"unknown merge field: no {m.group(1)!r} here ({text})", m.group(1)
        if m := _UNDEFINED.search(text):
            return f"unknown merge field {m.group(1)!r}", m.group(1)
        return f"unknown merge field: {text}", ""
    if isinstance(exc, RecursionError):
        return "recursion too deep", ""
    if isinstance(exc, JinjaError):
        return str(exc.message or exc), ""
    return f"{type(exc).__name__}: {exc}", ""


_BATCH = 32  # chunks taken from a part's render between two checks of its size


def _render_part(template: Template, variables: dict[str, object], part: str) -> str:
    """One part, rendered with `variables`: the context's parent as it is (render() gives
    the environment's globals and the merge fields in one dict, shared by the three parts:
    Jinja reads the parent and never writes it)."""
    return "".join(_render_chunks(template, variables, part))


def _render_chunks(template: Template, variables: dict[str, object], part: str) -> list[str]:
    """_render_part's chunks, not yet joined: the template's own text comes out as the very
    string objects of its compiled code (the message builder knows those by identity)."""
    try:
        try:
            chunks: list[str] = []
            size = 0
            stream = template.root_render_func(template.new_context(variables, shared=True))
            # The chunks come in batches (taken and measured in C: a part is a few dozen
            # chunks, so most are one batch), the size checked after each: a part stops at
            # most a batch after MAX_OUTPUT, each chunk a value within MAX_VALUE or template
            # text within MAX_BODY_SOURCE.
            while batch := list(islice(stream, _BATCH)):
                size += sum(map(len, batch))
                if size > MAX_OUTPUT:
                    raise TemplateLimitError(f"the {part} would be longer than {MAX_OUTPUT:,} characters")
                chunks += batch
            return chunks
        except Exception:
            _ENV.handle_exception()  # re-raises with the template's own lines in the traceback
    except Exception as exc:  # any error of a template is the template's, reported with its line
        text, name = _message(exc)
        raise RenderError(TemplateProblem(part, _line_of(exc, part), text, name)) from exc


def _parent(data: MergeData) -> dict[str, object]:
    """The globals and the merge fields: what new_context would copy for each part."""
    parent = dict(_GLOBALS)
    parent.update(data.variables())
    return parent


def render(compiled: CompiledTemplate, data: MergeData) -> RenderedMessage:
    """One recipient's subject, HTML (CSS inlined) and text. Raises RenderError."""
    subject, chunks, text = render_chunks(compiled, data)
    return RenderedMessage(subject, "".join(chunks), text)


def render_chunks(compiled: CompiledTemplate, data: MergeData) -> tuple[str, list[str], str]:
    """render(), with the HTML as its chunks (joined, they are render()'s HTML): the message
    builder analyses the template's fixed text once per campaign rather than each message's
    HTML (message_builder, Speed). Raises RenderError."""
    variables = _parent(data)
    start_budget()
    subject = _render_part(compiled.subject, variables, "subject")
    chunks = _render_chunks(compiled.html, variables, "html")
    if not compiled.html_inlined:
        chunks = [inline_css("".join(chunks))]
    text = (_render_part(compiled.text, variables, "text") if compiled.text is not None
            else html_to_text("".join(chunks)))
    return subject, chunks, text


def template_strings(template: Template) -> list[str]:
    """The strings of a compiled template's code (its fixed text among them), nested code
    (macros, blocks) included."""
    found: list[str] = []
    codes = [template.root_render_func.__code__]
    codes += [block.__code__ for block in template.blocks.values()]
    while codes:
        code = codes.pop()
        for const in code.co_consts:
            if type(const) is str:
                found.append(const)
            elif isinstance(const, CodeType):
                codes.append(const)
    return found


def render_preview(compiled: CompiledTemplate, recipient: Recipient, *,
                   unsubscribe_url: str = "https://example.invalid/unsubscribe/preview",
                   postal_address: str = "", list_name: str = "", campaign_name: str = "",
                   ) -> RenderedMessage:
    """The message as `recipient` would get it, with a placeholder unsubscribe link."""
    return render(compiled, MergeData(recipient, unsubscribe_url, postal_address, list_name,
                                      campaign_name))


# ---- checking ---------------------------------------------------------------------------------

def _walk(node: nodes.Node, parent: nodes.Node | None = None
          ) -> Iterator[tuple[nodes.Node, nodes.Node | None]]:
    yield node, parent
    for child in node.iter_child_nodes():
        yield from _walk(child, node)


def _guarded(parent: nodes.Node | None) -> bool:
    if isinstance(parent, nodes.Filter) and parent.name in _GUARDS:
        return True
    return isinstance(parent, nodes.Test) and parent.name in _GUARD_TESTS


def _attribute_key(node: nodes.Node) -> str | None:
    """X in `attributes.X` or `attributes["X"]`."""
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) \
            and node.node.name == "attributes":
        return str(node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) \
            and node.node.name == "attributes" and isinstance(node.arg, nodes.Const):
        return str(node.arg.value)
    return None


def _static_problems(part: str, tree: nodes.Template, sample: Recipient) -> list[TemplateProblem]:
    problems: list[TemplateProblem] = []
    unknown = meta.find_undeclared_variables(tree) - _KNOWN
    seen: set[str] = set()
    for node, parent in _walk(tree):
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in unknown \
                and node.name not in seen:
            seen.add(node.name)
            known = ", ".join(sorted(MERGE_FIELDS))
            problems.append(TemplateProblem(part, node.lineno, f"unknown merge field {node.name!r}"
                                            f" (known: {known})", node.name))
        key = _attribute_key(node)
        if key is not None and key not in sample.attributes and not _guarded(parent) \
                and f"attributes.{key}" not in seen:
            seen.add(f"attributes.{key}")
            problems.append(TemplateProblem(
                part, node.lineno, f"attributes.{key} is not an attribute of the sample contact; "
                f"a contact without it cannot be rendered (write `attributes.{key} | default(\"\")`"
                f" or test `attributes.{key} is defined`)", f"attributes.{key}"))
    return problems


def check(compiled: CompiledTemplate, sample: Recipient, *, postal_address: str = "x",
          list_name: str = "List", campaign_name: str = "Campaign") -> list[TemplateProblem]:
    """Every problem found before sending: unknown merge fields (all branches, with lines),
    unguarded attributes the sample lacks, and what rendering with `sample` raises."""
    problems: list[TemplateProblem] = []
    for part in PARTS:
        tree = compiled.trees.get(part)
        if tree is not None:
            problems.extend(_static_problems(part, tree, sample))
    data = MergeData(sample, "https://example.invalid/unsubscribe/check", postal_address,
                     list_name, campaign_name)
    variables = _parent(data)
    parts: list[tuple[str, Template]] = [("subject", compiled.subject), ("html", compiled.html_raw)]
    if compiled.text_given and compiled.text is not None:
        parts.append(("text", compiled.text))
    for part, template in parts:
        start_budget()
        try:
            _render_part(template, variables, part)
        except RenderError as exc:
            p = exc.problem
            if not any(q.part == p.part and q.name and q.name in (p.name, f"attributes.{p.name}")
                       for q in problems):
                problems.append(p)
    return problems


def attribute_references(compiled: CompiledTemplate) -> dict[str, tuple[str, int, bool]]:
    """attributes.X used by the template: X -> (part, line, guarded). A campaign can ask its
    audience which contacts lack an unguarded one before it starts."""
    out: dict[str, tuple[str, int, bool]] = {}
    for part in PARTS:
        tree = compiled.trees.get(part)
        if tree is None:
            continue
        for node, parent in _walk(tree):
            key = _attribute_key(node)
            if key is not None:
                guarded = _guarded(parent)
                prev = out.get(key)
                if prev is None:
                    out[key] = (part, node.lineno, guarded)
                elif prev[2] and not guarded:  # one unguarded use makes it unguarded
                    out[key] = (part, node.lineno, False)
    return out


__all__ = [
    "MAX_BODY_SOURCE",
    "MAX_NAME",
    "MAX_SUBJECT_SOURCE",
    "MERGE_FIELDS",
    "PARTS",
    "CompiledTemplate",
    "MergeData",
    "Recipient",
    "RenderError",
    "RenderedMessage",
    "TemplateError",
    "TemplateProblem",
    "TemplateSource",
    "attribute_references",
    "check",
    "compile_template",
    "render",
    "render_chunks",
    "render_preview",
    "template_strings",
]
