"""Script-injection payloads in prompts, responses, diffs, documents and rationales run on
nobody: not on the expert's review pages and history, not on the lead's page, not in the
Django admin.

Each page is opened twice: once with the Content-Security-Policy as served, and once with
the browser told to ignore it, so the proof does not lean on the policy: the sanitiser alone
must leave nothing to run. A payload that ran would open a dialog (every payload calls
alert), fetch from another origin, or leave an active element or attribute in the DOM.
"""

from __future__ import annotations

from typing import Any

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

from feedback.models import Campaign, Item, QueueEntry, Response, User
from reviews import services
from reviews.models import Assignment, Review
from tests.feedback.factories import CampaignFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "<svg onload=alert(3)><circle r=1 /></svg>",
    "<svg><script>alert(4)</script></svg>",
    '<iframe srcdoc="<script>parent.alert(5)</script>"></iframe>',
    "[click me](javascript:alert(6))",
    "[click me](JaVaScRiPt&#58;alert(7))",
    '<a href="javascript:alert(8)">plain link</a>',
    "![tracking pixel](https://evil.example/pwned9.png)",
    '![x" onerror="alert(10)](/static/missing.png)',
    "{{ 7|add:'1' }} {% debug %} ${alert(11)} {{constructor.constructor('alert(11)')()}}",
    '<div hx-get="/admin/" hx-trigger="load" hx-on::load="alert(12)">htmx</div>',
    "<details open ontoggle=alert(13)>x</details>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(14)>",
    '"><img src=x onerror=alert(15)>',
    "</textarea><script>alert(16)</script>",
    "[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxNyk8L3NjcmlwdD4=)",
    "<style>@import url(https://evil.example/pwned18.css);</style>",
    '<object data="javascript:alert(19)"></object><embed src="javascript:alert(19)">',
    "[ref]: javascript:alert(20)\n\n[ref link][ref]",
    '<a href="&#106;avascript:alert(21)">entity link</a>',
    "![svg image](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMjIpPjwvc3ZnPg==)",
]
ALL = "\n\n".join(PAYLOADS)
DIFF = (
    "--- a/<svg onload=alert(30)>.py\n"
    '+++ b/"><img src=x onerror=alert(31)>.py\n'
    "@@ -1,3 +1,3 @@ <script>alert(32)</script>\n"
    "-<script>alert(33)</script>\n"
    '+x = "</pre><img src=x onerror=alert(34)>"\n'
    " <iframe srcdoc='<script>parent.alert(35)</script>'></iframe>\n"
    "-[y](javascript:alert(36))\n"
    "+{{ request.user.password }}\n"
)

DOM_PROBE = """() => {
  const bad = [];
  const schemes = ['javascript:', 'vbscript:', 'data:text', 'data:image/svg'];
  for (const el of document.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase();
    if (['iframe', 'frame', 'object', 'embed', 'base', 'math'].includes(tag)) bad.push(tag);
    // Inert icons in the admin's chrome are fine; an svg or style in the content is not.
    if ((tag === 'svg' || tag === 'style') && el.closest('body')
        && el.closest('main, #content-main, #result_list, .md, .document, .response, td, pre, fieldset')) {
      bad.push(tag + ' in the content');
    }
    if (tag === 'script' && (!el.src || new URL(el.src).origin !== location.origin)) {
      bad.push('script ' + (el.src || el.textContent.slice(0, 40)));
    }
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      const value = attr.value.trim().toLowerCase();
      if (name.startsWith('on')) bad.push(tag + '[' + name + ']');
      if (name.startsWith('hx-on') || name.startsWith('data-hx-on') || name === 'srcdoc') bad.push(tag + '[' + name + ']');
      if (['href', 'src', 'action', 'formaction', 'data', 'xlink:href', 'poster'].includes(name)
          && schemes.some((s) => value.startsWith(s))) bad.push(tag + '[' + name + '=' + value.slice(0, 30) + ']');
    }
  }
  for (const el of document.querySelectorAll('[hx-disable] [hx-get], [hx-disable] [hx-post], [hx-disable] [hx-trigger], .md [hx-get], .md [hx-trigger]')) {
    bad.push('htmx attribute in untrusted content');
  }
  return bad;
}"""


def _item(
    campaign: Campaign, n: int, *, prompt: Any, context: Any, responses: list[tuple[str, str]]
) -> Item:
    item = Item.objects.create(
        campaign=campaign,
        external_id=f"xss-{campaign.kind}-{n}",
        prompt=prompt,
        context=context,
        content_hash=f"{campaign.pk}-{n}",
    )
    QueueEntry.objects.create(item=item, campaign=campaign, open_slots=campaign.overlap)
    for position, (fmt, text) in enumerate(responses):
        Response.objects.create(
            item=item, model_name=f"m{position}", text=text, format=fmt, position=position
        )
    return item


def _body(campaign: Campaign, assignment: Assignment) -> dict[str, Any]:
    order = assignment.response_order
    body: dict[str, Any] = {"rationale": ALL, "flags": ["unsafe"]}
    if campaign.kind == "pairwise":
        body["preference"] = {"chosen": order[0], "strength": 3}
    if campaign.kind == "ranking":
        body["ranking"] = order
    if campaign.kind == "correction":
        body["correction"] = {"response": order[0], "text": ALL}
    if campaign.rubric:
        body["ratings"] = {str(rid): {c["key"]: c["min"] for c in campaign.rubric} for rid in order}
    return body


@pytest.fixture
def hostile_world() -> dict[str, Any]:
    expert = UserFactory(role=User.Role.EXPERT, email="expert@example.test")
    lead = UserFactory(role=User.Role.LEAD, email="lead@example.test")
    admin = UserFactory(
        role=User.Role.ADMIN, email="admin@example.test", is_staff=True, is_superuser=True
    )
    # Admins work with two factors (feedback.mfa_policy); this one has set up TOTP.
    TOTP.activate(admin, generate_totp_secret())
    rubric = [
        {
            "key": "accuracy",
            "label": PAYLOADS[0],
            "min": 1,
            "max": 3,
            "anchors": {"1": PAYLOADS[1], "3": PAYLOADS[14]},
        }
    ]
    chat = [
        {"role": "system", "content": ALL},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": ALL},
                {"type": "image_url", "image_url": {"url": "javascript:alert(40)"}},
                {"type": "image_url", "image_url": {"url": "https://evil.example/pwned41.png"}},
                {
                    "type": "image_url",
                    "image_url": {
                        "url": "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoNDIpPjwvc3ZnPg=="
                    },
                },
            ],
        },
    ]
    code_pr = {
        "kind": "code_pr",
        "repo": PAYLOADS[14],
        "title": PAYLOADS[0],
        "description": ALL,
        "diff": DIFF,
    }
    brief = {
        "kind": "legal_brief",
        "title": PAYLOADS[1],
        "jurisdiction": PAYLOADS[15],
        "clause_under_review": '9.2"><script>alert(43)</script>',
        "sections": [{"heading": p, "text": ALL} for p in PAYLOADS[:4]]
        + [{"heading": "9.2 Liability", "text": ALL}],
        "images": [{"url": "https://evil.example/pwned44.png", "alt": PAYLOADS[2]}],
    }
    specs = [
        ("pairwise", [], code_pr, [("markdown", ALL), ("text", ALL)]),
        ("correction", rubric, brief, [("markdown", ALL)]),
        (
            "rating",
            rubric,
            {"note": ALL, "images": [{"url": "//evil.example/pwned45.png"}]},
            [("code", ALL)],
        ),
        ("ranking", [], {}, [("markdown", ALL), ("code", ALL), ("diff", DIFF)]),
    ]
    live: dict[str, Assignment] = {}
    campaigns: list[Campaign] = []
    reviews: list[Review] = []
    for kind, campaign_rubric, context, responses in specs:
        campaign = CampaignFactory(
            kind=kind, name=f"{kind} {PAYLOADS[0]}", instructions=ALL, rubric=campaign_rubric
        )
        campaigns.append(campaign)
        for n in range(2):
            _item(
                campaign,
                n,
                prompt=chat if kind == "correction" else ALL,
                context=context,
                responses=responses,
            )
        done = services.assignment_claim(campaign=campaign, expert=expert)
        assert done is not None
        review, _ = services.review_submit(
            assignment_id=done.pk, expert=expert, body=_body(campaign, done)
        )
        reviews.append(review)
        claimed = services.assignment_claim(campaign=campaign, expert=expert)
        assert claimed is not None
        live[kind] = claimed
    Review.objects.filter(pk__in=[r.pk for r in reviews]).update(verdict_note=ALL)
    return {
        "expert": expert,
        "lead": lead,
        "admin": admin,
        "live": live,
        "campaigns": campaigns,
        "reviews": reviews,
    }


def _visit(session, path: str, *, exercise: bool = False) -> None:
    page = session.page
    response = page.goto(path)
    assert response is not None
    assert response.status == 200, (path, response.status)
    page.wait_for_load_state("load")
    if exercise:
        # Use the page as an expert would: shortcuts, the editor's live diff, every details open.
        page.keyboard.press("?")
        page.keyboard.press("Escape")
        editor = page.locator("[data-correction-editor]")
        if editor.count():
            editor.press("Control+End")
            editor.type(PAYLOADS[0])
            page.wait_for_function(
                "() => document.querySelectorAll('[data-live-diff] ins').length > 0"
            )
        page.evaluate(
            "() => document.querySelectorAll('details').forEach((d) => { d.open = true; })"
        )
    page.wait_for_timeout(300)  # onerror/onload handlers would fire by now
    bad = page.evaluate(DOM_PROBE)
    assert bad == [], (path, bad)
    session.watch.assert_clean()


@pytest.mark.parametrize("bypass_csp", [False, True], ids=["csp-on", "csp-ignored"])
def test_no_payload_runs_on_the_expert_lead_or_admin_pages(hostile_world, open_session, bypass_csp):
    assert len(PAYLOADS) >= 12
    world = hostile_world

    expert = open_session(world["expert"], bypass_csp=bypass_csp)
    for kind, assignment in world["live"].items():
        _visit(expert, f"/review/a/{assignment.pk}/", exercise=True)
        if kind == "correction":
            text = expert.page.locator("#correction-text").input_value()
            assert text.startswith(ALL), "the model's text reaches the editor verbatim, as text"
        content = expert.page.locator("#workspace").inner_text()
        assert "{{ 7|add:'1' }}" in content, f"template syntax shown as text ({kind})"
    _visit(expert, "/review/history/")
    assert "{% debug %}" in expert.page.locator("main").inner_text()

    lead = open_session(world["lead"], bypass_csp=bypass_csp)
    for campaign in world["campaigns"]:
        _visit(lead, f"/review/campaigns/{campaign.pk}/reviews/")

    admin = open_session(world["admin"], bypass_csp=bypass_csp)
    item = Item.objects.filter(campaign=world["campaigns"][0]).first()
    assert item is not None
    for path in [
        "/admin/feedback/item/",
        f"/admin/feedback/item/{item.pk}/change/",
        f"/admin/feedback/campaign/{world['campaigns'][1].pk}/change/",
        "/admin/reviews/review/",
        f"/admin/reviews/review/{world['reviews'][1].pk}/change/",
        f"/review/campaigns/{world['campaigns'][1].pk}/reviews/",
    ]:
        _visit(admin, path)
