"""The segment filter language: text -> syntax tree (domain.audience), with exact error columns.

Theory of operation
-------------------
An operator writes a filter such as

    attributes.plan = "pro" and (attributes.age >= 30 or in_list('news'))
        and not email contains "@test." and opened within 90 days

and we must never run something they did not mean, nor crash on something odd. So the text is
tokenised, then parsed by recursive descent into the frozen tree of domain.audience; storage
compiles that tree to SQL with bound parameters (storage/sql/segment_sql.py). No piece of the
text ever becomes SQL text. Every refusal is a SegmentError naming the 1-based column.

Grammar (keywords case-insensitive):

    expr     := and_expr ("or" and_expr)*
    and_expr := unary ("and" unary)*
    unary    := "not" unary | "(" expr ")" | predicate
    predicate:= "in_list" "(" STRING ")"
              | ("opened" | "clicked") "within" INTEGER ("day" | "days")
              | field ( OP value | "contains" value | "in" "(" value ("," value)* ")" | "exists" )
    field    := "email" | "domain" | "name" | "attributes" ("." KEY)+      KEY: [A-Za-z0-9_-]+
    value    := STRING ('...' or "...", backslash escapes \\ \' \") | NUMBER | "true" | "false"
    OP       := "=" | "!=" | "<" | "<=" | ">" | ">="

Limits, so a filter costs bounded work to parse and to run: MAX_LENGTH characters,
MAX_DEPTH levels of nesting, MAX_NODES predicates, MAX_IN values in one in (...), MAX_PATH keys
in an attribute path, MAX_DAYS for engagement windows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailprime.domain.audience import (
    And,
    Compare,
    CompareOp,
    Contains,
    Engaged,
    Engagement,
    Exists,
    Field,
    FieldRef,
    InList,
    InValues,
    Not,
    Or,
    Scalar,
    SegmentError,
    SegmentFilter,
)

MAX_LENGTH = 4_000
MAX_DEPTH = 32
MAX_NODES = 200
MAX_IN = 1_000
MAX_PATH = 8
MAX_KEY = 64
MAX_STRING = 1_000
MAX_DAYS = 36_500

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?![A-Za-z_]))
  | (?P<op><=|>=|!=|=|<|>)
  | (?P<punct>[(),.])
  | (?P<word>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<string>["'])
""", re.VERBOSE)
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # number, op, punct, word, string, end
    text: str
    value: Scalar
    col: int  # 1-based


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            if len(out) > MAX_STRING:
                raise SegmentError(f"string longer than {MAX_STRING} characters", start + 1)
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in _ESCAPES:
                raise SegmentError("unknown escape in string (use \\\\, \\', \\\", \\n, \\t)",
                                   i + 1)
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise SegmentError("string not closed", start + 1)


def tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SegmentError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        if kind == "ws":
            pos = m.end()
            continue
        if kind == "string":
            content, end = _read_string(text, pos)
            tokens.append(_Tok("string", text[pos:end], content, pos + 1))
            pos = end
            continue
        raw = m.group()
        value: Scalar = raw
        if kind == "number":
            value = float(raw) if "." in raw else int(raw)
            if isinstance(value, int) and abs(value) > 2**53:
                raise SegmentError("number too large (at most 2**53)", pos + 1)
        tokens.append(_Tok(kind, raw, value, pos + 1))
        pos = m.end()
    tokens.append(_Tok("end", "", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.i = 0
        self.nodes = 0

    # -- helpers --

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def advance(self) -> _Tok:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def word(self, *words: str) -> bool:
        return self.tok.kind == "word" and self.tok.text.lower() in words

    def expect_punct(self, ch: str, what: str) -> _Tok:
        if self.tok.kind != "punct" or self.tok.text != ch:
            raise SegmentError(f"expected {ch!r} {what}, found {_describe(self.tok)}", self.tok.col)
        return self.advance()

    def count(self, col: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SegmentError(f"more than {MAX_NODES} conditions", col)

    # -- grammar --

    def parse(self) -> SegmentFilter:
        if self.tok.kind == "end":
            raise SegmentError("empty filter", 1)
        node = self.expr(1)
        if self.tok.kind != "end":
            raise SegmentError(f"expected 'and', 'or' or the end, found {_describe(self.tok)}",
                               self.tok.col)
        return node

    def expr(self, depth: int) -> SegmentFilter:
        items = [self.and_expr(depth)]
        while self.word("or"):
            self.advance()
            items.append(self.and_expr(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self, depth: int) -> SegmentFilter:
        items = [self.unary(depth)]
        while self.word("and"):
            self.advance()
            items.append(self.unary(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self, depth: int) -> SegmentFilter:
        if depth > MAX_DEPTH:
            raise SegmentError(f"nested deeper than {MAX_DEPTH} levels", self.tok.col)
        if self.word("not"):
            self.advance()
            return Not(self.unary(depth + 1))
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.advance()
            node = self.expr(depth + 1)
            self.expect_punct(")", "to close the parenthesis")
            return node
        return self.predicate()

    def predicate(self) -> SegmentFilter:
        tok = self.tok
        self.count(tok.col)
        if self.word("in_list"):
            self.advance()
            self.expect_punct("(", "after in_list")
            name = self.advance()
            if name.kind != "string" or not str(name.value):
                raise SegmentError("in_list needs a list name in quotes", name.col)
            self.expect_punct(")", "after the list name")
            return InList(str(name.value))
        if self.word("opened", "clicked"):
            kind = Engagement(self.advance().text.lower())
            if not self.word("within"):
                raise SegmentError(f"expected 'within' after {kind.value!r}", self.tok.col)
            self.advance()
            days = self.advance()
            if days.kind != "number" or not isinstance(days.value, int) or not (
                    1 <= days.value <= MAX_DAYS):
                raise SegmentError(f"expected a whole number of days (1 to {MAX_DAYS})", days.col)
            if not self.word("day", "days"):
                raise SegmentError("expected 'days'", self.tok.col)
            self.advance()
            return Engaged(kind, days.value)
        ref = self.field()
        if self.word("exists"):
            self.advance()
            return Exists(ref)
        if self.word("contains"):
            self.advance()
            return Contains(ref, self.value())
        if self.word("in"):
            self.advance()
            self.expect_punct("(", "after 'in'")
            values = [self.value()]
            while self.tok.kind == "punct" and self.tok.text == ",":
                self.advance()
                if len(values) >= MAX_IN:
                    raise SegmentError(f"more than {MAX_IN} values in 'in (...)'", self.tok.col)
                values.append(self.value())
            self.expect_punct(")", "to close the value list")
            return InValues(ref, tuple(values))
        if self.tok.kind == "op":
            op_tok = self.advance()
            op = CompareOp(op_tok.text)
            value_tok = self.tok
            value = self.value()
            if isinstance(value, bool) and op not in (CompareOp.EQ, CompareOp.NE):
                raise SegmentError(f"{op.value!r} cannot compare true/false", value_tok.col)
            if ref.field is not Field.ATTRIBUTE and not isinstance(value, str):
                raise SegmentError(f"{ref.field.value} is text: compare it with a quoted string",
                                   value_tok.col)
            return Compare(ref, op, value)
        raise SegmentError("expected a comparison (= != < <= > >=), 'contains', 'in' or "
                           f"'exists', found {_describe(self.tok)}", self.tok.col)

    def field(self) -> FieldRef:
        tok = self.tok
        if tok.kind != "word" or tok.text.lower() not in {f.value for f in Field}:
            raise SegmentError("expected a condition (email, domain, name, attributes.KEY, "
                               f"in_list(...), opened/clicked within N days), found "
                               f"{_describe(tok)}", tok.col)
        self.advance()
        field = Field(tok.text.lower())
        if field is not Field.ATTRIBUTE:
            return FieldRef(field)
        path: list[str] = []
        while self.tok.kind == "punct" and self.tok.text == ".":
            self.advance()
            key = self.advance()
            # A key may look like a number ("attributes.2024"): take the raw text.
            if key.kind not in ("word", "number") or not _KEY.fullmatch(key.text) \
                    or len(key.text) > MAX_KEY:
                raise SegmentError(f"expected an attribute name ([A-Za-z0-9_-], at most {MAX_KEY})",
                                   key.col)
            path.append(key.text)
            if len(path) > MAX_PATH:
                raise SegmentError(f"attribute path longer than {MAX_PATH} keys", key.col)
        if not path:
            raise SegmentError("expected '.' and an attribute name after 'attributes'",
                               self.tok.col)
        return FieldRef(field, tuple(path))

    def value(self) -> Scalar:
        tok = self.advance()
        if tok.kind in ("string", "number"):
            return tok.value
        if tok.kind == "word" and tok.text.lower() in ("true", "false"):
            return tok.text.lower() == "true"
        raise SegmentError(f"expected a value (a quoted string, a number, true or false), found "
                           f"{_describe(tok)}", tok.col)


def _describe(tok: _Tok) -> str:
    return "the end" if tok.kind == "end" else repr(tok.text[:40])


def parse_segment(text: str) -> SegmentFilter:
    """The syntax tree of `text`; SegmentError (with the column) if it is not a valid filter."""
    if len(text) > MAX_LENGTH:
        raise SegmentError(f"filter longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    return _Parser(tokenize(text)).parse()
