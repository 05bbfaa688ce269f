"""Rendering untrusted text: markdown without raw HTML, sanitised; images only from us; diffs."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from feedback import rendering

PAYLOADS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "<svg onload=alert(1)><circle/></svg>",
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt&#58;alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    '![x" onerror="alert(1)](/media/a.png)',
    "![x](javascript:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    '<div hx-get="/admin/" hx-trigger="load">x</div>',
    "<details open ontoggle=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "[x](vbscript:msgbox(1))",
    "<object data=javascript:alert(1)>",
]


class _Tags(HTMLParser):
    """Every element and attribute a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))


def _tags(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_payload_survives_as_active_markup(payload):
    for tag, attrs in _tags(rendering.render_markdown(payload)):
        assert tag in rendering.ALLOWED_TAGS
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert not name.startswith(("hx-", "data-")), (tag, name)
            if name in {"href", "src"}:
                assert not value.strip().lower().startswith(("javascript:", "vbscript:")), value
                assert not value.strip().lower().startswith("data:") or (
                    tag == "img" and value.startswith("data:image/")
                )


def test_links_keep_only_web_and_mail_schemes_and_open_apart():
    html = rendering.render_markdown(
        "[a](https://example.com) [b](mailto:x@example.com) [c](ftp://example.com) [d](/local)"
    )
    assert (
        '<a href="https://example.com" target="_blank" rel="noopener nofollow noreferrer">' in html
    )
    assert 'href="mailto:x@example.com"' in html
    assert "ftp://" not in html
    assert 'href="/local"' not in html


def test_images_load_only_from_our_origin_or_inline():
    html = rendering.render_markdown(
        "![ours](/media/items/1.png) ![inline](data:image/png;base64,iVBORw0KGgo=) "
        "![theirs](https://tracker.example/pixel.png) ![proto](//evil.example/x.png) "
        "![svg](data:image/svg+xml;base64,PHN2Zz4=)"
    )
    assert '<img src="/media/items/1.png" alt="ours" loading="lazy">' in html
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in html
    assert "https://tracker.example" not in html
    assert "Image “theirs” from tracker.example is not shown" in html
    assert "evil.example/x.png" not in html
    assert (
        "data:image/svg" not in html.split("blocked-image")[0]
        or '<img src="data:image/svg' not in html
    )


def test_raw_html_is_shown_as_text():
    assert rendering.render_markdown("<b>bold</b>") == "<p>&lt;b&gt;bold&lt;/b&gt;</p>\n"


def test_code_blocks_take_keyboard_focus_so_they_can_scroll():
    assert '<pre tabindex="0"><code' in rendering.render_markdown("```\nx = 1\n```")


def test_a_diff_is_split_into_files_and_hunks_with_both_line_numbers():
    diff = (
        "--- a/app.py\n+++ b/app.py\n@@ -1,4 +1,4 @@ def f\n def f():\n"
        '-    """old\n+    """new\n     """\n     return 1\n'
        "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n"
    )
    files = rendering.parse_diff(diff)
    assert files is not None
    assert [(f.path, f.status, f.added, f.removed) for f in files] == [
        ("app.py", "modified", 1, 1),
        ("new.txt", "added", 1, 0),
    ]
    lines = files[0].hunks[0].lines
    assert [(line.kind, line.old, line.new) for line in lines] == [
        ("ctx", 1, 1),
        ("del", 2, None),
        ("add", None, 2),
        ("ctx", 3, 3),
        ("ctx", 4, 4),
    ]
    # Each side is highlighted as its own file: the docstring closes on line 3 in both.
    assert '<span class="k">return</span>' in lines[4].html
    assert files[0].hunks[0].header.startswith("@@ -1,4 +1,4 @@")


def test_code_in_a_diff_is_escaped():
    files = rendering.parse_diff(
        "--- a/x.html\n+++ b/x.html\n@@ -1 +1 @@\n-<p>a</p>\n+<script>alert(1)</script>\n"
    )
    assert files is not None
    html = files[0].hunks[0].lines[1].html
    assert "<script" not in html
    assert "&lt;" in html


def test_a_text_that_is_not_a_diff_gives_none():
    assert rendering.parse_diff("just words") is None


@pytest.mark.parametrize(
    ("heading", "matches"),
    [
        ("9.2 Limitation of liability", True),
        ("Clause 9.2 — Limitation", True),
        ("9.2.1 Exclusions", True),
        ("19.2 Notices", False),
        ("9.20 Assignment", False),
        ("9 General", False),
    ],
)
def test_the_clause_under_review_is_found_in_headings(heading, matches):
    assert rendering.clause_in_heading(heading, "9.2") is matches


def test_a_long_text_renders_the_same_from_the_cache():
    text = "Paragraph with *emphasis*.\n\n" * 400
    assert rendering.render_markdown(text) == rendering.render_markdown(text)
    assert rendering.render_markdown(text).count("<em>emphasis</em>") == 400


def test_a_rendered_diff_escapes_file_names_and_headers_and_lists_its_files():
    rendered = rendering.render_diff(
        '--- a/"><b>x</b>.py\n+++ b/"><b>x</b>.py\n@@ -1 +1 @@ <i>ctx</i>\n-a = 1\n+a = 2\n',
        prefix="doc-",
    )
    assert rendered is not None
    assert [(f.path, f.anchor) for f in rendered.files] == [('"><b>x</b>.py', "doc-diff-file-1")]
    assert "<b>x</b>" not in rendered.html
    assert "<i>ctx</i>" not in rendered.html
    assert "&lt;b&gt;x&lt;/b&gt;" in rendered.html
    assert '<details class="diff-file" id="doc-diff-file-1" open>' in rendered.html
    assert rendering.render_diff("not a diff") is None


def test_a_rendered_document_marks_the_clause_and_escapes_headings():
    document = rendering.render_document(
        [
            {"heading": "1. <b>Definitions</b>", "text": "Words."},
            {"heading": "9.2 Cap", "text": "Capped at **fees**."},
        ],
        "9.2",
    )
    assert document.sections == 2
    assert document.clause_anchor == "section-2"
    assert "&lt;b&gt;Definitions&lt;/b&gt;" in document.toc_html
    assert "<b>Definitions</b>" not in document.body_html
    assert '<section id="section-2" class="brief-section under-review"' in document.body_html
    assert "<strong>fees</strong>" in document.body_html
