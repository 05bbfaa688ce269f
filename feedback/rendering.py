"""Safe rendering of untrusted text: markdown, code and unified diffs.

Everything a model, an importer or an expert wrote passes through here. Markdown is
parsed with raw HTML off, then the HTML is sanitised with an allow-list; diffs are
parsed with unidiff and highlighted by Pygments on the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_for_filename, guess_lexer
from pygments.util import ClassNotFound
from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "code",
    "del",
    "div",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
    "td": {"align"},
    "th": {"align"},
}
URL_SCHEMES = {"http", "https", "mailto"}


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # "commonmark" with html=False: raw HTML in the source is shown as text, never parsed.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.enable("strikethrough")
    return md


def sanitize(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener nofollow noreferrer",
        strip_comments=True,
    )


def render_markdown(text: str) -> str:
    """Markdown to sanitised HTML."""
    return sanitize(_markdown().render(text or ""))


def render_code(text: str, *, filename: str = "") -> str:
    try:
        lexer = get_lexer_for_filename(filename) if filename else guess_lexer(text)
    except ClassNotFound:
        lexer = TextLexer()
    return sanitize(highlight(text, lexer, HtmlFormatter(nowrap=True)))


@dataclass
class DiffLine:
    kind: str  # "add" | "del" | "ctx"
    old: int | None
    new: int | None
    html: str


@dataclass
class DiffHunk:
    header: str
    lines: list[DiffLine] = field(default_factory=list)


@dataclass
class DiffFile:
    path: str
    added: int
    removed: int
    hunks: list[DiffHunk] = field(default_factory=list)


def _lexer_for(path: str) -> Lexer:
    try:
        return get_lexer_for_filename(path, stripnl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False)


def parse_diff(text: str) -> list[DiffFile] | None:
    """A unified diff as files → hunks → highlighted lines; None when it does not parse."""
    try:
        patch = PatchSet(text or "")
    except UnidiffParseError:
        return None
    if not len(patch):
        return None
    formatter = HtmlFormatter(nowrap=True)
    files: list[DiffFile] = []
    for patched in patch:
        path = patched.target_file[2:] if patched.target_file.startswith("b/") else patched.path
        lexer = _lexer_for(path)
        out = DiffFile(path=path, added=patched.added, removed=patched.removed)
        for hunk in patched:
            h = DiffHunk(header=str(hunk).splitlines()[0] if str(hunk) else "")
            for line in hunk:
                kind = "add" if line.is_added else "del" if line.is_removed else "ctx"
                code = highlight(line.value.rstrip("\n"), lexer, formatter).rstrip("\n")
                h.lines.append(
                    DiffLine(
                        kind=kind,
                        old=line.source_line_no,
                        new=line.target_line_no,
                        html=sanitize(code),
                    )
                )
            out.hunks.append(h)
        files.append(out)
    return files
