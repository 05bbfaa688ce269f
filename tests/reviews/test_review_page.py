from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from feedback.models import Campaign, QueueEntry, Response
from reviews import services
from reviews.models import Assignment, Review
from tests.feedback.factories import CampaignFactory, ItemFactory
from tests.reviews.pages import client_for

pytestmark = pytest.mark.django_db

RUBRIC = [
    {
        "key": "accuracy",
        "label": "Accuracy",
        "min": 1,
        "max": 5,
        "anchors": {"1": "Wrong on the facts", "3": "Mostly right", "5": "Nothing to correct"},
    },
    {"key": "clarity", "label": "Clarity", "min": 1, "max": 3, "anchors": {"1": "Muddled"}},
]


def _claim(campaign, expert) -> Assignment:
    assignment = services.assignment_claim(campaign=campaign, expert=expert)
    assert assignment is not None
    return assignment


def _page(client, assignment) -> str:
    res = client.get(reverse("review-page", args=[assignment.pk]))
    assert res.status_code == 200, res.content[:500]
    return res.content.decode()


def test_it_shows_a_pairwise_item_blind_with_both_responses_and_the_controls(expert):
    campaign = CampaignFactory(kind="pairwise", instructions="Prefer **correct** answers.")
    ItemFactory(campaign=campaign)
    assignment = _claim(campaign, expert)
    html = _page(client_for(expert), assignment)
    assert "Response A" in html
    assert "Response B" in html
    assert "model-a" not in html, "review is blind"
    assert "model-b" not in html, "review is blind"
    assert "<strong>correct</strong>" in html
    assert 'name="chosen"' in html
    assert 'name="strength"' in html
    assert 'value="both_bad"' in html
    assert reverse("review-draft", args=[assignment.pk]) in html


def test_it_shows_every_scale_point_with_its_anchor_on_a_rating_item(expert):
    campaign = CampaignFactory(kind="rating", rubric=RUBRIC)
    ItemFactory(campaign=campaign)
    assignment = _claim(campaign, expert)
    html = _page(client_for(expert), assignment)
    rid = Response.objects.get(item=assignment.item).pk
    for value in range(1, 6):
        assert f'name="rating-{rid}-accuracy" value="{value}"' in html
    for value in range(1, 4):
        assert f'name="rating-{rid}-clarity" value="{value}"' in html
    assert "Wrong on the facts" in html
    assert "Nothing to correct" in html
    assert "Muddled" in html
    assert 'value="all_wrong"' in html


def test_it_offers_a_reorderable_list_for_a_ranking_item(expert):
    campaign = CampaignFactory(kind="ranking")
    ItemFactory(campaign=campaign, responses=4)
    assignment = _claim(campaign, expert)
    html = _page(client_for(expert), assignment)
    assert html.count('class="rank-item"') == 4
    assert html.count('name="ranking"') == 4
    assert 'draggable="true"' in html
    assert 'data-move="up"' in html


def test_it_prefills_the_correction_editor_with_the_model_output(expert):
    campaign = CampaignFactory(kind="correction")
    item = ItemFactory(campaign=campaign, responses=0)
    Response.objects.create(item=item, model_name="m", text="The </textarea><b>clause</b> is void.")
    assignment = _claim(campaign, expert)
    html = _page(client_for(expert), assignment)
    assert "data-correction-editor" in html
    # The text goes into the editor escaped: it can't close the textarea early.
    assert "The &lt;/textarea&gt;&lt;b&gt;clause&lt;/b&gt; is void." in html
    assert "</textarea><b>" not in html


def test_it_renders_a_code_pr_diff_with_line_numbers_and_collapsible_files(expert):
    campaign = CampaignFactory(kind="pairwise")
    diff = (
        "--- a/app/db.py\n+++ b/app/db.py\n@@ -1,3 +1,3 @@\n import os\n"
        '-q = "SELECT * FROM t WHERE id = %s" % uid\n+q = "SELECT * FROM t WHERE id = %s"\n'
        " run(q)\n--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n # Title\n+More\n"
    )
    ItemFactory(
        campaign=campaign,
        context={"kind": "code_pr", "repo": "org/app", "title": "Fix injection", "diff": diff},
    )
    assignment = _claim(campaign, expert)
    html = _page(client_for(expert), assignment)
    assert "with-doc" in html
    assert "doc-code_pr" in html
    assert html.count('<details class="diff-file"') == 2
    assert "app/db.py" in html
    assert "org/app" in html
    assert '<tr class="del"><td class="ln">2</td><td class="ln"></td>' in html
    assert '<span class="k">import</span>' in html or '<span class="kn">import</span>' in html
    assert "Files in this pull request" in html


def test_it_renders_a_legal_brief_with_section_navigation_and_the_clause_marked(expert):
    campaign = CampaignFactory(kind="correction")
    ItemFactory(
        campaign=campaign,
        context={
            "kind": "legal_brief",
            "title": "Master services agreement",
            "jurisdiction": "England and Wales",
            "clause_under_review": "9.2",
            "sections": [
                {"heading": "1. Definitions", "text": "Words mean things."},
                {"heading": "9.2 Limitation of liability", "text": "Capped at **fees paid**."},
                {"heading": "19.2 Notices", "text": "In writing."},
            ],
        },
    )
    assignment = _claim(campaign, expert)
    html = _page(client_for(expert), assignment)
    assert 'aria-label="Sections of the document"' in html
    assert 'href="#section-2"' in html
    assert "data-jump-clause" in html
    assert html.count('class="brief-section under-review"') == 1
    assert '<section id="section-2" class="brief-section under-review"' in html
    assert "<strong>fees paid</strong>" in html


def test_it_shows_allowed_images_inline_and_names_the_host_of_a_blocked_one(expert):
    campaign = CampaignFactory(kind="pairwise")
    ItemFactory(
        campaign=campaign,
        prompt=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in the picture?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {"type": "image_url", "image_url": {"url": "https://tracker.example/p.png"}},
                ],
            }
        ],
    )
    assignment = _claim(campaign, expert)
    html = _page(client_for(expert), assignment)
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in html
    assert 'src="https://tracker.example' not in html
    assert "from tracker.example is not shown" in html


def test_an_outsider_gets_404_and_an_anonymous_visitor_is_sent_to_sign_in(expert, other_expert):
    campaign = CampaignFactory(kind="pairwise")
    ItemFactory(campaign=campaign)
    assignment = _claim(campaign, expert)
    url = reverse("review-page", args=[assignment.pk])
    assert client_for(other_expert).get(url).status_code == 404
    assert (
        client_for(other_expert).post(reverse("review-submit", args=[assignment.pk])).status_code
        == 404
    )
    assert (
        client_for(other_expert).post(reverse("review-draft", args=[assignment.pk])).status_code
        == 404
    )
    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert "/accounts/login/" in anonymous["Location"]


def test_a_submit_through_htmx_answers_with_the_next_item_and_its_url(expert):
    campaign = CampaignFactory(kind="pairwise")
    ItemFactory.create_batch(2, campaign=campaign)
    assignment = _claim(campaign, expert)
    chosen = assignment.response_order[0]
    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {
            "chosen": chosen,
            "strength": "2",
            "rationale": "A cites the statute.",
            "active_seconds": "30",
        },
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 200
    review = Review.objects.get(assignment=assignment)
    assert (review.chosen_id, review.strength) == (chosen, 2)
    following = Assignment.objects.exclude(pk=assignment.pk).get(expert=expert)
    assert res["HX-Push-Url"] == reverse("review-page", args=[following.pk])
    html = res.content.decode()
    assert html.lstrip().startswith('<div id="messages"')
    assert f'data-assignment="{following.pk}"' in html
    assert "<html" not in html, "a partial, not a page"


def test_a_rejected_submit_comes_back_with_the_experts_answer_and_the_problem_named(expert):
    campaign = CampaignFactory(kind="rating", rubric=RUBRIC)
    ItemFactory(campaign=campaign)
    assignment = _claim(campaign, expert)
    rid = assignment.response_order[0]
    res = client_for(expert).post(
        reverse("review-submit", args=[assignment.pk]),
        {f"rating-{rid}-accuracy": "4", "rationale": "Keep me"},
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 422
    html = res.content.decode()
    assert "missing scores for clarity" in html
    assert f'name="rating-{rid}-accuracy" value="4" required checked' in html
    assert "Keep me" in html
    assert not Review.objects.exists()


def test_an_expired_lease_is_explained_and_the_unsent_text_handed_back(expert):
    campaign = CampaignFactory(kind="correction")
    ItemFactory(campaign=campaign)
    assignment = _claim(campaign, expert)
    Assignment.objects.filter(pk=assignment.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=5)
    )
    client = client_for(expert)
    page = client.get(reverse("review-page", args=[assignment.pk]))
    assert page.status_code == 200
    assert "Your time on this item ran out" in page.content.decode()
    res = client.post(
        reverse("review-submit", args=[assignment.pk]),
        {"correction_text": "My careful rewrite", "rationale": "Because"},
        headers={"HX-Request": "true"},
    )
    assert res.status_code == 409
    html = res.content.decode()
    assert "Your time on this item ran out" in html
    assert "My careful rewrite" in html
    assert "Traceback" not in html
    assert not Review.objects.exists()


def test_going_back_to_a_submitted_item_leads_to_the_history(expert):
    campaign = CampaignFactory(kind="pairwise")
    ItemFactory(campaign=campaign)
    assignment = _claim(campaign, expert)
    services.review_submit(
        assignment_id=assignment.pk,
        expert=expert,
        body={"preference": {"chosen": assignment.response_order[0], "strength": 1}},
    )
    res = client_for(expert).get(reverse("review-page", args=[assignment.pk]))
    assert res.status_code == 302
    assert res["Location"] == reverse("review-history") + f"#assignment-{assignment.pk}"


def test_start_resumes_the_live_claim_instead_of_taking_another(expert):
    campaign = CampaignFactory(kind="pairwise")
    ItemFactory.create_batch(2, campaign=campaign)
    client = client_for(expert)
    first = client.post(reverse("review-start", args=[campaign.pk]))
    again = client.post(reverse("review-start", args=[campaign.pk]))
    assert first["Location"] == again["Location"]
    assert Assignment.objects.filter(expert=expert).count() == 1


def test_an_expert_cannot_start_a_campaign_they_cannot_see(expert):
    campaign = CampaignFactory(kind="pairwise", required_skills=["tax"])
    ItemFactory(campaign=campaign)
    res = client_for(expert).post(reverse("review-start", args=[campaign.pk]))
    assert res.status_code == 404
    assert not Assignment.objects.exists()
    assert QueueEntry.objects.get().open_slots == 1
    assert Campaign.objects.count() == 1


@pytest.mark.parametrize("change", ["skill_removed", "paused", "closed"])
@pytest.mark.parametrize("action", ["submit", "skip"])
def test_work_handed_in_after_the_campaign_changed_is_saved_and_said_so_without_an_error(
    expert, change, action
):
    """The claim was taken while the expert could claim; what they hand in is saved. That no
    more work follows is news, not an error, and a campaign they can no longer see is not
    described (its required skills were named)."""
    from django.contrib.messages import get_messages

    campaign = CampaignFactory(kind="pairwise", required_skills=["rust"])
    expert.profile.skills = ["rust"]
    expert.profile.save()
    ItemFactory.create_batch(2, campaign=campaign)
    assignment = _claim(campaign, expert)
    if change == "skill_removed":
        expert.profile.skills = []
        expert.profile.save()
    else:
        Campaign.objects.filter(pk=campaign.pk).update(status=change)
    if action == "submit":
        res = client_for(expert).post(
            reverse("review-submit", args=[assignment.pk]),
            {"chosen": assignment.response_order[0], "strength": "1", "active_seconds": "5"},
        )
    else:
        res = client_for(expert).post(
            reverse("review-skip", args=[assignment.pk]), {"reason": "too_long"}
        )

    assert res.status_code == 302
    assert Assignment.objects.get(pk=assignment.pk).status == (
        "submitted" if action == "submit" else "skipped"
    )
    said = [(m.level_tag, m.message) for m in get_messages(res.wsgi_request)]
    assert not [text for level, text in said if level == "error"], said
    assert not any("rust" in text for _, text in said), said
    assert any("more work" in text or "paused" in text for _, text in said), said
    assert Assignment.objects.filter(expert=expert).count() == 1, "no new claim"
