"""The axis-string syntax of ``einsum`` and ``rearrange``: one tokenizer, one grammar.

A *side* lists axes: names (``batch``, or quoted ``'kv-head'`` for any other text), at
most one ``...`` (the axes not listed), and groups ``(new: a b)`` (axes ``a b`` flattened
into one axis ``new``, or, on the left of ``rearrange``, one axis split into ``a b``).
A side in braces ``{a b}`` is *unordered*: its axes are matched by name, not position.
An einsum equation is sides joined by ``,`` with an optional ``-> output``; a rearrange
string is ``side -> side``.

>>> spec = parse_rearrange("b h w c -> b c (hw: h w)")
>>> [type(item).__name__ for item in spec.rhs.items]
['AxisName', 'AxisName', 'Group']
>>> spec.rhs.items[2].name.name, [p.name for p in spec.rhs.items[2].parts]
('hw', ['h', 'w'])

Errors point at the offending character:

>>> parse_einsum("b h w c) -> b")
Traceback (most recent call last):
...
namax.ops.axis_string.AxisStringError: einsum: unexpected ')' at column 8
    b h w c) -> b
           ^

This is an implementation module for :func:`namax.einsum` and :func:`namax.rearrange`;
``namax`` does not re-export it.
"""

from __future__ import annotations

import dataclasses
from typing import NoReturn, Optional, Union


class AxisStringError(ValueError):
    """A malformed axis string, or one that does not fit the arrays: the message quotes the
    string with a caret under the offending part.

    >>> str(AxisStringError("einsum", "a b -> c", 7, 8, "no axis 'c'")).splitlines()[0]
    "einsum: no axis 'c' at column 8"
    """

    def __init__(self, what: str, text: str, start: int, end: int, message: str):
        self.text, self.start, self.end, self.message = text, start, end, message
        underline = " " * start + "^" * max(1, end - start)
        super().__init__(f"{what}: {message} at column {start + 1}\n    {text}\n    {underline}")


def fail(what: str, text: str, span: tuple[int, int], message: str) -> NoReturn:
    """Raise :class:`AxisStringError` for ``text[span[0]:span[1]]``.

    >>> fail("rearrange", "a -> b", (5, 6), "b is not bound")
    Traceback (most recent call last):
    ...
    namax.ops.axis_string.AxisStringError: rearrange: b is not bound at column 6
        a -> b
             ^
    """
    raise AxisStringError(what, text, span[0], span[1], message)


# --- parse result --------------------------------------------------------------------------


class _Located:
    """A parsed piece that knows where it stands in the string (``start``, ``end`` fields)."""

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)


@dataclasses.dataclass(frozen=True)
class AxisName(_Located):
    """A name in an axis string, with its span ``[start, end)`` in the string.

    >>> parse_einsum("batch -> batch").output.items[0]
    AxisName(name='batch', start=9, end=14)
    """

    name: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Rest(_Located):
    """``...``: the axes a side does not list.

    >>> parse_einsum("... -> ...").output.items
    (Rest(start=7, end=10),)
    """

    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Group(_Located):
    """``(name: a b)`` (``name`` optional): axes ``a b`` seen as one axis ``name``.

    >>> g = parse_rearrange("(x: a b) -> a b").lhs.items[0]
    >>> g.name.name, [p.name for p in g.parts], g.span
    ('x', ['a', 'b'], (0, 8))
    """

    name: Optional[AxisName]
    parts: tuple[AxisName, ...]
    start: int
    end: int


Item = Union[AxisName, Rest, Group]


@dataclasses.dataclass(frozen=True)
class Side(_Located):
    """One side of an axis string: its items in order, and whether it was in braces.

    >>> s = parse_rearrange("{h w} -> ... (hw: h w)").lhs
    >>> s.unordered, [i.name for i in s.items]
    (True, ['h', 'w'])
    """

    items: tuple[Item, ...]
    unordered: bool
    start: int
    end: int

    @property
    def rest(self) -> Optional[Rest]:
        """The side's ``...``, if it has one."""
        return next((i for i in self.items if isinstance(i, Rest)), None)


@dataclasses.dataclass(frozen=True)
class EinsumSpec:
    """A parsed einsum equation: one side per operand, and the output (None without ``->``).

    >>> e = parse_einsum("b e, e m -> b m")
    >>> len(e.operands), [i.name for i in e.output.items]
    (2, ['b', 'm'])
    """

    operands: tuple[Side, ...]
    output: Optional[Side]
    text: str


@dataclasses.dataclass(frozen=True)
class RearrangeSpec:
    """A parsed rearrange string ``lhs -> rhs``.

    >>> r = parse_rearrange("... (hw: h w) -> ... h w")
    >>> r.lhs.items[1].name.name, len(r.rhs.items)
    ('hw', 3)
    """

    lhs: Side
    rhs: Side
    text: str


# --- tokenizer -----------------------------------------------------------------------------

_PUNCT = {"(": "(", ")": ")", "{": "{", "}": "}", ":": ":", ",": ","}


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # "name", "...", "->", "(", ")", "{", "}", ":", ",", "end"
    text: str
    start: int
    end: int


def _describe(tok: _Token) -> str:
    return "end of string" if tok.kind == "end" else repr(tok.text)


def _tokenize(text: str, what: str) -> list[_Token]:
    tokens = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _PUNCT:
            tokens.append(_Token(c, c, i, i + 1))
            i += 1
        elif c == "." and text.startswith("...", i):
            tokens.append(_Token("...", "...", i, i + 3))
            i += 3
        elif c == ".":
            fail(what, text, (i, i + 1), "unexpected '.' (an ellipsis is three dots '...')")
        elif c == "-" and text.startswith("->", i):
            tokens.append(_Token("->", "->", i, i + 2))
            i += 2
        elif c == "-":
            fail(what, text, (i, i + 1), "unexpected '-' (the arrow is '->')")
        elif c in "'\"":
            j, chars = i + 1, []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(text[j])
                j += 1
            if j >= n:
                fail(what, text, (i, i + 1), f"the quote {c} is never closed")
            if not chars:
                fail(what, text, (i, j + 1), "an axis name cannot be empty")
            tokens.append(_Token("name", "".join(chars), i, j + 1))
            i = j + 1
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            tokens.append(_Token("name", text[i:j], i, j))
            i = j
        elif c.isdigit():
            fail(what, text, (i, i + 1), f"unexpected {c!r}: axis names start with a letter or '_' "
                                         "(quote other names: 'kv-head')")
        else:
            fail(what, text, (i, i + 1), f"unexpected {c!r}")
    tokens.append(_Token("end", "", n, n))
    return tokens


# --- grammar -------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, what: str):
        self.text, self.what = text, what
        self.tokens = _tokenize(text, what)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def unexpected(self, tok: _Token, hint: str = "") -> NoReturn:
        fail(self.what, self.text, (tok.start, max(tok.end, tok.start + 1)),
             f"unexpected {_describe(tok)}" + (f" ({hint})" if hint else ""))

    def side(self) -> Side:
        """``{ items }`` or ``items``; stops before ``,``, ``->`` or the end."""
        first = self.peek()
        if first.kind == "{":
            self.take()
            items = self.items(in_braces=True)
            close = self.peek()
            if close.kind != "}":
                fail(self.what, self.text, (first.start, first.end), "this '{' is never closed")
            self.take()
            after = self.peek()
            if after.kind not in (",", "->", "end"):
                self.unexpected(after, "braces enclose a whole side")
            return Side(items, True, first.start, close.end)
        items = self.items(in_braces=False)
        end = self.tokens[self.pos - 1].end if self.pos > 0 and items else first.start
        return Side(items, False, first.start, end)

    def items(self, in_braces: bool) -> tuple[Item, ...]:
        items: list[Item] = []
        rest: Optional[_Token] = None
        while True:
            tok = self.peek()
            if tok.kind == "name":
                self.take()
                items.append(AxisName(tok.text, tok.start, tok.end))
            elif tok.kind == "...":
                if rest is not None:
                    fail(self.what, self.text, (tok.start, tok.end),
                         f"a second '...' (the first is at column {rest.start + 1})")
                rest = self.take()
                items.append(Rest(tok.start, tok.end))
            elif tok.kind == "(":
                items.append(self.group())
            elif tok.kind == "," and in_braces:
                self.take()  # inside braces a comma only separates names
            elif tok.kind in (",", "->", "end") or (tok.kind == "}" and in_braces):
                return tuple(items)
            elif tok.kind == "{":
                self.unexpected(tok, "braces enclose a whole side")
            else:
                self.unexpected(tok)

    def group(self) -> Group:
        open_ = self.take()
        name: Optional[AxisName] = None
        parts: list[AxisName] = []
        while True:
            tok = self.peek()
            if tok.kind == "name":
                self.take()
                parts.append(AxisName(tok.text, tok.start, tok.end))
            elif tok.kind == ":":
                if name is not None:
                    self.unexpected(tok, "a group has one name before ':'")
                if len(parts) != 1:
                    self.unexpected(tok, "':' comes after exactly one name, as in (new: a b)")
                self.take()
                name, parts = parts[0], []
            elif tok.kind == ")":
                self.take()
                if not parts:
                    fail(self.what, self.text, (open_.start, tok.end), "a group needs at least one axis")
                return Group(name, tuple(parts), open_.start, tok.end)
            elif tok.kind == "(":
                self.unexpected(tok, "groups cannot nest")
            elif tok.kind == "...":
                self.unexpected(tok, "'...' cannot be inside a group")
            elif tok.kind in ("end", "->", ",", "}"):
                fail(self.what, self.text, (open_.start, open_.end), "this '(' is never closed")
            else:
                self.unexpected(tok)


def parse_einsum(text: str) -> EinsumSpec:
    """Parse an einsum equation: ``"a b, b c -> a c"``, ``"{b} -> ..."``, ``"-> a c"``.

    Groups are not allowed, and braces only around a lone left side.

    >>> e = parse_einsum("{h w} -> ...")
    >>> e.operands[0].unordered, e.output.rest is not None
    (True, True)
    """
    if not isinstance(text, str):
        raise TypeError(f"einsum: the equation must be a str, got {type(text).__name__}")
    p = _Parser(text, "einsum")
    operands = [p.side()]
    while p.peek().kind == ",":
        p.take()
        operands.append(p.side())
    output = None
    if p.peek().kind == "->":
        p.take()
        output = p.side()
    if p.peek().kind != "end":
        p.unexpected(p.peek(), "an equation has one '->'" if p.peek().kind == "->" else "")
    for side in operands + ([output] if output is not None else []):
        for item in side.items:
            if isinstance(item, Group):
                fail("einsum", text, item.span, "einsum takes axis names, not groups '( )'")
    for side in operands:
        if side.unordered and len(operands) > 1:
            fail("einsum", text, (side.start, side.start + 1),
                 "an unordered '{...}' left side stands alone: it names axes of all the operands")
    if output is not None and output.unordered:
        fail("einsum", text, (output.start, output.start + 1), "the output cannot be unordered")
    return EinsumSpec(tuple(operands), output, text)


def parse_rearrange(text: str) -> RearrangeSpec:
    """Parse a rearrange string ``lhs -> rhs``, e.g. ``"{h w} -> ... (hw: h w)"``.

    >>> parse_rearrange("a b c")
    Traceback (most recent call last):
    ...
    namax.ops.axis_string.AxisStringError: rearrange: expected '->' at column 6
        a b c
             ^
    """
    if not isinstance(text, str):
        raise TypeError(f"rearrange: the expression must be a str, got {type(text).__name__}")
    p = _Parser(text, "rearrange")
    lhs = p.side()
    tok = p.peek()
    if tok.kind != "->":
        if tok.kind == "end":
            fail("rearrange", text, (tok.start, tok.start + 1), "expected '->'")
        p.unexpected(tok, "expected '->'")
    p.take()
    rhs = p.side()
    if p.peek().kind != "end":
        p.unexpected(p.peek(), "a rearrange string has one '->'" if p.peek().kind == "->" else "")
    if rhs.unordered:
        fail("rearrange", text, (rhs.start, rhs.start + 1), "the right side lists the result's order; no braces")
    return RearrangeSpec(lhs, rhs, text)
