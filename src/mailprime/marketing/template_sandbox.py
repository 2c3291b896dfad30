"""The Jinja2 sandbox templates run in, and the limits that keep one template from taking a
server down.

Theory of operation
-------------------
A template is code written by a marketer (or sent through the API by anyone holding a key) and
run once per recipient inside the server that also holds every contact. Jinja2's
`ImmutableSandboxedEnvironment` already refuses the classic escapes (attributes starting with "_", the
internals of functions, frames and code objects: `{{ ''.__class__.__mro__ }}` is an error, not a
class), and `StrictUndefined` turns an unknown merge field into an error instead of an empty
string. What the sandbox does not bound is work and memory, so we add, per render:

* a step budget (MAX_STEPS): every loop iteration and every call (functions, macros, methods,
  `loop()` of recursive loops) takes one step. Loops are bounded by wrapping each `for` loop's
  iterable, at compile time, in a counting iterator (an AST rewrite: `For.iter` becomes a call
  of `_counted`, a name the template cannot see or shadow because it is imported by the
  compiled module, not looked up in the context). Nested loops, recursive macros and
  `loop(...)` recursion all run out of steps instead of running for hours.
* a size cap on every value built (MAX_VALUE characters): `~` concatenation (rewritten to a
  checked join), `+` and `*` on strings and lists, `%` formatting with a width, `**` on
  integers, and the filters and string methods that take a width or multiply text (`center`,
  `indent`, `format`, `replace`, `join`, `ljust`...) are checked *before* the value is built,
  so `{% set s = s ~ s %}` in a loop stops at MAX_VALUE, not at the machine's memory.
* `range` capped at MAX_RANGE items (Jinja's own sandbox cap is 100,000; a newsletter needs
  tens), `lipsum` removed, `str.format`/`format_map` refused (a width in a format spec is
  unbounded; use `~`).
* an output budget: the renderer (templates.py) stops a part once MAX_OUTPUT characters have
  come out of it (measured every 32 chunks, so at most that many chunks past the limit).

Time is bounded by these, not by a clock: a render that takes one step is cheap, so steps times
the largest value is the most work a template can ask for, and a clock read per step would cost
more than the steps themselves. Python's recursion limit bounds macro recursion depth
(RecursionError is reported like any other render error).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_eval_context

# Sizes are in characters of the rendered text.
MAX_OUTPUT = 1_048_576  # per rendered part; Gmail clips an HTML body at 102 KB already
MAX_VALUE = MAX_OUTPUT  # any string or list built while rendering
MAX_STEPS = 200_000  # loop iterations + calls per render; a large newsletter uses a few hundred
MAX_RANGE = 10_000  # items of range()
MAX_INT_BITS = 4096  # integers built by ** and * (a 1,233-digit number is more than enough)
MAX_WIDTH = 1_000  # widths given to center/indent/ljust/format specs

# Names a template may use besides the merge fields (Jinja's defaults, lipsum removed).
TEMPLATE_GLOBALS = ("range", "dict", "cycler", "joiner", "namespace")


class TemplateLimitError(SecurityError):
    """A render asked for more than the limits allow (steps, value size, width)."""


_steps: ContextVar[list[int]] = ContextVar("mailprime_template_steps")


def start_budget() -> list[int]:
    """Begins a render's step budget (a one-item list, decremented in place: cheaper than
    setting the context variable at every step)."""
    budget = [MAX_STEPS]
    _steps.set(budget)
    return budget


def _step() -> None:
    budget = _steps.get(None)
    if budget is None:  # rendering outside render(): give it a budget of its own
        budget = start_budget()
    budget[0] -= 1
    if budget[0] < 0:
        raise TemplateLimitError(
            f"the template took more than {MAX_STEPS:,} steps (loop iterations and calls): "
            "a loop or a recursion that does not end?")


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _step()
        yield item


def _check_size(size: int, what: str) -> None:
    if size > MAX_VALUE:
        raise TemplateLimitError(f"{what} would be {size:,} characters; at most {MAX_VALUE:,}")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | bytes) else len(str(value))


@pass_eval_context
def _concat(eval_ctx: Any, *parts: Any) -> str:
    """`a ~ b ~ c`, checked before it is joined."""
    _check_size(sum(_length(p) for p in parts), "a ~ concatenation")
    return markup_join(parts) if eval_ctx.autoescape else str_join(parts)


def _safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitError(f"range() gives at most {MAX_RANGE:,} items")
    return rng


_WIDE_FORMAT = re.compile(r"%[-#0 +]*(?:\*|\d{4,})|%[-#0 +]*\d*\.(?:\*|\d{4,})")


def _check_percent_format(fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDE_FORMAT.search(fmt):
        raise TemplateLimitError(f"a % format width or precision is at most {MAX_WIDTH - 1}")


def _width_filter(name: str, position: int) -> Callable[..., Any]:
    """A filter whose argument at `position` (after the value) is a width: checked first."""
    inner = FILTERS[name]

    def checked(*args: Any, **kwargs: Any) -> Any:
        width = args[position] if len(args) > position else kwargs.get("width")
        size = len(width) if isinstance(width, str) else width
        if isinstance(size, int) and size > MAX_WIDTH:
            raise TemplateLimitError(f"{name}: a width is at most {MAX_WIDTH}")
        return inner(*args, **kwargs)

    _keep_pass_arg(inner, checked)
    return checked


def _keep_pass_arg(inner: Callable[..., Any], wrapper: Callable[..., Any]) -> None:
    """Jinja passes the environment or eval context to a filter marked for it: keep the mark."""
    mark = getattr(inner, "jinja_pass_arg", None)
    if mark is not None:
        wrapper.jinja_pass_arg = mark  # type: ignore[attr-defined]


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_percent_format(value)
    result: str = FILTERS["format"](value, *args, **kwargs)
    return result


@pass_eval_context
def _replace_filter(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> Any:
    text, old_s, new_s = str(s), str(old), str(new)
    hits = text.count(old_s) if old_s else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    _check_size(len(text) + hits * (len(new_s) - len(old_s)), "replace")
    return FILTERS["replace"](eval_ctx, s, old, new, count)


@pass_eval_context
def _join_filter(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
    items = list(value)
    _check_size(sum(_length(i) for i in items) + len(d) * len(items), "join")
    return FILTERS["join"](eval_ctx, items, d, attribute)


def _count_filter(name: str, position: int) -> Callable[..., Any]:
    """batch and slice loop as many times as their argument (at `position`) says: capped like
    range()."""
    inner = FILTERS[name]

    def checked(*args: Any, **kwargs: Any) -> Any:
        count = args[position] if len(args) > position else None
        if isinstance(count, int) and count > MAX_RANGE:
            raise TemplateLimitError(f"{name}: at most {MAX_RANGE:,}")
        return inner(*args, **kwargs)

    _keep_pass_arg(inner, checked)
    return checked


# String methods a template may call. The rest (format, format_map, center, ljust, zfill,
# expandtabs, encode...) either take an unbounded width or have no use in a message.
_STR_METHODS = frozenset({
    "lower", "upper", "title", "capitalize", "casefold", "swapcase", "strip", "lstrip", "rstrip",
    "split", "rsplit", "splitlines", "startswith", "endswith", "count", "find", "rfind", "index",
    "rindex", "replace", "join", "partition", "rpartition", "removeprefix", "removesuffix",
    "isalpha", "isdigit", "isalnum", "isspace", "islower", "isupper", "istitle", "isnumeric",
    "isdecimal", "isascii", "striptags", "unescape",
})


def _check_str_method(obj: Any, args: tuple[Any, ...]) -> None:
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    if name not in _STR_METHODS:
        raise SecurityError(f"the string method {name}() is not available in templates")
    if name == "replace" and len(args) >= 2:
        hits = owner.count(str(args[0])) if args[0] else len(owner) + 1
        _check_size(len(owner) + hits * (len(str(args[1])) - len(str(args[0]))), "replace()")
    elif name == "join" and args:
        items = list(args[0])
        _check_size(sum(_length(i) for i in items) + len(owner) * len(items), "join()")


# What getattr() finds on a plain dict: its methods and the object dunders.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class MailSandbox(ImmutableSandboxedEnvironment):
    """The sandbox with the step and size checks described in the module doc."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `attributes.city`, `list.name`: Jinja tries getattr(), which on a dict raises
        # AttributeError for any name that is not a dict attribute (an exception per field, a
        # tenth of a render), then subscripts. For a plain dict and such a name, subscripting
        # first gives the same value; anything else takes Jinja's way (a missing key too, for
        # its Undefined).
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if __obj is _counted and len(args) == 1:
            # The wrapper _rewrite puts around every loop's iterable (one call per loop run):
            # ours, so neither a string method nor unsafe, and it takes no context; the only
            # keywords the compiler may add (_loop_vars, _block_vars) are dropped by
            # Context.call too. Its step is taken here, as below.
            _step()
            return _counted(args[0])
        _step()
        _check_str_method(__obj, args)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 \
                    and right * max(abs(left).bit_length(), 1) > MAX_INT_BITS:
                raise TemplateLimitError(f"a number of more than {MAX_INT_BITS} bits")
            return left**right
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _check_size(len(seq) * n, "a * repetition")
            if isinstance(left, int) and isinstance(right, int) \
                    and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                raise TemplateLimitError(f"a number of more than {MAX_INT_BITS} bits")
            return left * right
        if operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _check_size(len(left) + len(right), "a + concatenation")
            return left + right
        _check_percent_format(left)
        return left % right


def _rewrite(template: nodes.Template) -> nodes.Template:
    """Counts loop iterations and checks `~` sizes (see the module doc)."""
    counted = nodes.ImportedName(f"{__name__}._counted")
    concat = nodes.ImportedName(f"{__name__}._concat")
    for loop in template.find_all(nodes.For):
        loop.iter = nodes.Call(counted, [loop.iter], [], None, None, lineno=loop.lineno)
    for node in list(template.find_all(nodes.Concat)):
        call = nodes.Call(concat, list(node.nodes), [], None, None, lineno=node.lineno)
        _replace_node(template, node, call)
    return template


def _replace_node(root: nodes.Node, old: nodes.Node, new: nodes.Node) -> None:
    for parent in root.find_all(nodes.Node):
        for field in parent.fields:
            value = getattr(parent, field, None)
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                setattr(parent, field, [new if v is old else v for v in value])
                return


def make_environment() -> MailSandbox:
    """One environment for the three parts: autoescape for the part named "html" only."""
    env = MailSandbox(
        autoescape=lambda name: name == "html",
        undefined=StrictUndefined,
        loader=None,  # no {% include %} / {% extends %} / {% import %}: a template is one text
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=0,
    )
    env.globals = {name: env.globals[name] for name in TEMPLATE_GLOBALS if name in env.globals}
    env.globals["range"] = _safe_range
    env.filters["center"] = _width_filter("center", 1)
    env.filters["indent"] = _width_filter("indent", 1)
    env.filters["format"] = _format_filter
    env.filters["replace"] = _replace_filter
    env.filters["join"] = _join_filter
    env.filters["batch"] = _count_filter("batch", 1)
    env.filters["slice"] = _count_filter("slice", 2)
    return env


def compile_code(env: MailSandbox, source: str, part: str) -> Any:
    """Parses, rewrites and compiles one part; the code's file name is "<part>", so a traceback
    of a render error names the part and its line."""
    tree = env.parse(source, name=part, filename=f"<{part}>")
    return env.compile(_rewrite(tree), name=part, filename=f"<{part}>")


__all__ = [
    "MAX_OUTPUT",
    "MAX_RANGE",
    "MAX_STEPS",
    "MAX_VALUE",
    "MAX_WIDTH",
    "TEMPLATE_GLOBALS",
    "MailSandbox",
    "TemplateLimitError",
    "compile_code",
    "make_environment",
    "start_budget",
]
