"""Safe rendering of untrusted text: markdown, code, unified diffs, legal documents.

Everything a model, an importer or an expert wrote passes through here. Markdown is
parsed with raw HTML off, then the HTML is sanitised with an allow-list; diffs are
parsed with unidiff and highlighted by Pygments on the server. Images are shown only
from our own origin or as inline `data:` images: a third-party image would tell its
host who reads the item and when, so it is replaced by a note naming the host.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from threading import Lock
from typing import Any
from urllib.parse import urlsplit

import nh3
from django.utils.html import escape
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name, get_lexer_for_filename
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
    "img",
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
    "img": {"src", "alt", "title", "loading"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
    "td": {"align"},
    "th": {"align"},
}
# "data" is let through the scheme check only so that inline images survive; the
# attribute filter below keeps it on <img src> and nowhere else.
URL_SCHEMES = {"http", "https", "mailto", "data"}
LINK_SCHEMES = ("http://", "https://", "mailto:")
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+$")


def image_src_allowed(src: str) -> bool:
    """Our own origin (a path, never `//host`) or an inline raster image; never SVG."""
    src = src.strip()
    if _DATA_IMAGE.match(src):
        return True
    return src.startswith("/") and not src.startswith(("//", "/\\"))


def _filter_attribute(tag: str, attr: str, value: str) -> str | None:
    if tag == "a" and attr == "href":
        lowered = value.strip().lower()
        return value if lowered.startswith(LINK_SCHEMES) or lowered.startswith("#") else None
    if tag == "img" and attr == "src":
        return value if image_src_allowed(value) else None
    return value


def sanitize(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        url_schemes=URL_SCHEMES,
        link_rel="noopener nofollow noreferrer",
        # Links in a model's output open beside the workspace, never in place of it.
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )


def blocked_image_html(src: str, alt: str) -> str:
    host = urlsplit(src.strip()).hostname or "another site"
    label = f"Image “{alt}”" if alt else "An image"
    return (
        f'<span class="blocked-image">{escape(label)} from {escape(host)} is not shown: '
        "images load only from this platform.</span>"
    )


def _render_image(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    if not image_src_allowed(src):
        return blocked_image_html(src, alt)
    return f'<img src="{escape(src)}" alt="{escape(alt)}" loading="lazy">'


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # "commonmark" with html=False: raw HTML in the source is shown as text, never parsed.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.enable("strikethrough")
    md.add_render_rule("image", _render_image)
    return md


class _RenderCache:
    """A small LRU of rendered HTML keyed by a digest of the source.

    Items never change after import, and the same long brief is rendered for every
    expert who reviews it; the digest keeps the keys small whatever the text size.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = Lock()

    def get_or_make(self, kind: str, text: str, make: Callable[[], Any]) -> Any:
        key = kind + ":" + hashlib.blake2b(text.encode(), digest_size=20).hexdigest()
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)
        return value


_cache = _RenderCache(size=512)
# Tiny strings render faster than they hash and look up; anything longer is cached.
_CACHE_FROM_CHARS = 256


def _markdown_html(text: str) -> str:
    # Code blocks scroll sideways; a scrollable region must take keyboard focus to be
    # readable without a mouse. Added after sanitising: "<pre>" can only be a real tag there.
    return sanitize(_markdown().render(text)).replace("<pre>", '<pre tabindex="0">')


def render_markdown(text: str) -> str:
    """Markdown to sanitised HTML."""
    text = text if isinstance(text, str) else str(text or "")
    if len(text) < _CACHE_FROM_CHARS:
        return _markdown_html(text)
    return str(_cache.get_or_make("md", text, lambda: _markdown_html(text)))


def render_plain(text: str) -> str:
    """Text shown exactly as written (escaped; line breaks kept by CSS)."""
    return str(escape(text or ""))


def _lexer_for_code(filename: str, language: str) -> Lexer:
    try:
        if language:
            return get_lexer_by_name(language, stripnl=False)
        if filename:
            return get_lexer_for_filename(filename, stripnl=False)
    except ClassNotFound:
        pass
    # Guessing a lexer from content is slow on long text and often wrong; plain is honest.
    return TextLexer(stripnl=False)


def render_code(text: str, *, filename: str = "", language: str = "") -> str:
    lexer = _lexer_for_code(filename, language)

    def make() -> str:
        return sanitize(highlight(text or "", lexer, HtmlFormatter(nowrap=True)))

    return str(_cache.get_or_make(f"code:{lexer.name}", text or "", make))


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
    status: str = "modified"  # "added" | "removed" | "renamed" | "modified"
    anchor: str = ""


def _lexer_for(path: str) -> Lexer:
    try:
        return get_lexer_for_filename(path, stripnl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False)


def _highlight_block(values: list[str], lexer: Lexer) -> list[str]:
    """Highlight lines in one Pygments pass and split the result back into lines.

    One pass keeps multi-line tokens (docstrings, comments) right and is far faster
    than a call per line; Pygments closes its spans at every line end, so splitting
    on newlines leaves each line balanced.
    """
    if not values:
        return []
    source = "\n".join(v.rstrip("\r\n") for v in values) + "\n"
    lines = sanitize(highlight(source, lexer, HtmlFormatter(nowrap=True))).split("\n")
    lines = lines[: len(values)]
    return lines + [""] * (len(values) - len(lines))


def _highlight_hunk(lines: list[Any], lexer: Lexer) -> list[str]:
    """Each side of a hunk is highlighted as the file it belongs to: old lines with the
    context as it was, new lines with the context as it is, so a removed line that opens
    a string does not colour the added line after it."""
    old_side = [i for i, line in enumerate(lines) if not line.is_added]
    new_side = [i for i, line in enumerate(lines) if not line.is_removed]
    out = [""] * len(lines)
    old_html = _highlight_block([lines[i].value for i in old_side], lexer)
    new_html = _highlight_block([lines[i].value for i in new_side], lexer)
    for i, html in zip(old_side, old_html, strict=True):
        out[i] = html
    for i, html in zip(new_side, new_html, strict=True):
        out[i] = html  # context lines take the new side's colours
    return out


def _parse_diff(text: str) -> list[DiffFile] | None:
    try:
        patch = PatchSet(text or "")
    except UnidiffParseError:
        return None
    if not len(patch):
        return None
    files: list[DiffFile] = []
    for index, patched in enumerate(patch):
        path = patched.target_file[2:] if patched.target_file.startswith("b/") else patched.path
        if patched.is_removed_file:
            path = patched.source_file[2:] if patched.source_file.startswith("a/") else path
        status = (
            "added"
            if patched.is_added_file
            else "removed"
            if patched.is_removed_file
            else "renamed"
            if getattr(patched, "is_rename", False)
            else "modified"
        )
        lexer = _lexer_for(path)
        out = DiffFile(
            path=path,
            added=patched.added,
            removed=patched.removed,
            status=status,
            anchor=f"diff-file-{index + 1}",
        )
        for hunk in patched:
            header = f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start},{hunk.target_length} @@"
            if hunk.section_header:
                header += f" {hunk.section_header}"
            h = DiffHunk(header=header)
            lines = list(hunk)
            highlighted = _highlight_hunk(lines, lexer)
            for line, html in zip(lines, highlighted, strict=True):
                kind = "add" if line.is_added else "del" if line.is_removed else "ctx"
                h.lines.append(
                    DiffLine(kind=kind, old=line.source_line_no, new=line.target_line_no, html=html)
                )
            out.hunks.append(h)
        files.append(out)
    return files


def parse_diff(text: str) -> list[DiffFile] | None:
    """A unified diff as files → hunks → highlighted lines; None when it does not parse."""
    return _parse_diff(text)


@dataclass(frozen=True)
class FileSummary:
    path: str
    added: int
    removed: int
    status: str
    anchor: str


@dataclass(frozen=True)
class RenderedDiff:
    """A diff as the page shows it: one HTML string, and the file list for navigation.

    Kept as strings, not as thousands of line objects: the render cache holds many of
    these, and long-lived small objects make every garbage collection slower.
    """

    files: tuple[FileSummary, ...]
    html: str


_LINE_MARK = {"add": "added: ", "del": "removed: ", "ctx": ""}


def _diff_html(files: list[DiffFile], prefix: str) -> str:
    out: list[str] = []
    for f in files:
        out.append(
            f'<details class="diff-file" id="{escape(prefix)}{f.anchor}" open>'
            f'<summary><span class="file-status status-{f.status}">{f.status}</span> '
            f"<code>{escape(f.path)}</code> "
            f'<span class="add">+{f.added}<span class="visually-hidden"> lines added,</span></span> '
            f'<span class="del">&minus;{f.removed}<span class="visually-hidden"> lines removed</span></span>'
            "</summary>"
            '<table class="diff-table highlight">'
            f'<caption class="visually-hidden">Changes to {escape(f.path)}</caption>'
            '<thead class="visually-hidden"><tr><th scope="col">Old line</th>'
            '<th scope="col">New line</th><th scope="col">Code</th></tr></thead>'
            "<tbody hx-disable>"
        )
        for hunk in f.hunks:
            out.append(f'<tr class="hunk"><td colspan="3">{escape(hunk.header)}</td></tr>')
            out.extend(
                f'<tr class="{line.kind}"><td class="ln">{"" if line.old is None else line.old}</td>'
                f'<td class="ln">{"" if line.new is None else line.new}</td>'
                f'<td class="code"><span class="visually-hidden">{_LINE_MARK[line.kind]}</span>'
                f"<pre>{line.html}</pre></td></tr>"
                for line in hunk.lines
            )
        out.append("</tbody></table></details>")
    return "".join(out)


def render_diff(text: str, *, prefix: str = "") -> RenderedDiff | None:
    """A unified diff rendered to HTML (files collapsible, both line numbers, highlighted,
    every line sanitised); None when the text is not a diff."""

    def make() -> RenderedDiff | None:
        files = _parse_diff(text)
        if not files:
            return None
        summaries = tuple(
            FileSummary(f.path, f.added, f.removed, f.status, prefix + f.anchor) for f in files
        )
        return RenderedDiff(files=summaries, html=_diff_html(files, prefix))

    result: RenderedDiff | None = _cache.get_or_make(f"diff:{prefix}", text or "", make)
    return result


# --- Long documents ----------------------------------------------------------


@dataclass(frozen=True)
class RenderedDocument:
    """A long document as the page shows it: its table of contents and its body as HTML."""

    toc_html: str
    body_html: str
    sections: int
    clause_anchor: str


def clause_in_heading(heading: str, clause: str) -> bool:
    """Whether a heading names the clause or one of its sub-clauses.

    For clause 9.2: "9.2 Limitation", "Clause 9.2" and "9.2.1" match; "19.2" and "9.20" do not.
    """
    clause = (clause or "").strip().rstrip(".")
    if not clause:
        return False
    pattern = rf"(?<![\w.]){re.escape(clause)}(?!\d)"
    return re.search(pattern, heading or "") is not None


def render_document(sections: Any, clause: str = "") -> RenderedDocument:
    """A document's sections with anchors for navigation and the clause under review marked.

    A brief is dozens of short sections; the whole document is rendered and cached as one
    entry, so a 50 KB brief costs one digest and one lookup once it has been rendered.
    """
    sections = sections if isinstance(sections, list) else []
    key = json.dumps([clause, sections], sort_keys=True, default=str)
    result: RenderedDocument = _cache.get_or_make(
        "doc", key, lambda: _render_document(sections, clause)
    )
    return result


def _render_document(sections: list[Any], clause: str) -> RenderedDocument:
    toc: list[str] = []
    body: list[str] = []
    clause_anchor = ""
    count = 0
    for index, section in enumerate(sections):
        if not isinstance(section, dict):
            continue
        count += 1
        anchor = f"section-{index + 1}"
        heading = str(section.get("heading") or "")
        marked = clause_in_heading(heading, clause)
        if marked and not clause_anchor:
            clause_anchor = anchor
        title = escape(heading) if heading else "(untitled section)"
        toc.append(
            f'<li class="under-review"><a href="#{anchor}">{title}</a> '
            '<span class="visually-hidden">(under review)</span></li>'
            if marked
            else f'<li><a href="#{anchor}">{title}</a></li>'
        )
        badge = ' <span class="badge review-badge">Under review</span>' if marked else ""
        body.append(
            f'<section id="{anchor}" class="brief-section{" under-review" if marked else ""}" '
            f'aria-labelledby="{anchor}-h"><h3 id="{anchor}-h">{escape(heading)}{badge}</h3>'
            f'<div class="md" hx-disable>{_markdown_html(str(section.get("text") or ""))}</div>'
            "</section>"
        )
    return RenderedDocument(
        toc_html="".join(toc), body_html="".join(body), sections=count, clause_anchor=clause_anchor
    )
