"""An expert's skills typed in the admin are a list of names, kept as add_user keeps them:
anything else broke every claim and page of that expert."""

from __future__ import annotations

import pytest

from feedback.models import ExpertProfile, User
from reviews import services as reviews
from tests.feedback.factories import CampaignFactory, ItemFactory, UserFactory
from tests.mfa_fixtures import (  # noqa: F401
    admin_mfa_client_fixture,
    admin_with_mfa_fixture,
    totp_turn_on,
)

pytestmark = pytest.mark.django_db


def _save(client, profile: ExpertProfile, skills: str):
    return client.post(
        f"/admin/feedback/expertprofile/{profile.pk}/change/",
        {"user": profile.user_id, "skills": skills, "trust_score": "1.0"},
    )


@pytest.mark.parametrize("skills", ["5", '"law"', '{"law": 1}', "[1, 2]", '["law", null]'])
def test_skills_that_are_not_a_list_of_names_are_a_form_error(admin_mfa_client, skills):
    expert = UserFactory(role=User.Role.EXPERT)
    profile, _ = ExpertProfile.objects.get_or_create(user=expert)
    profile.skills = ["tax"]
    profile.save()

    page = _save(admin_mfa_client, profile, skills)

    assert page.status_code == 200
    assert "Must be a JSON list of skill names" in page.content.decode()
    profile.refresh_from_db()
    assert profile.skills == ["tax"]


@pytest.mark.parametrize(
    ("skills", "kept"),
    [("", []), ("null", []), ("[]", []), ('[" law", "law", "python ", " "]', ["law", "python"])],
)
def test_skills_are_kept_stripped_once_each_and_a_claim_reads_them(admin_mfa_client, skills, kept):
    expert = UserFactory(role=User.Role.EXPERT)
    profile, _ = ExpertProfile.objects.get_or_create(user=expert)

    page = _save(admin_mfa_client, profile, skills)

    assert page.status_code == 302, page.content.decode()[:2000]
    profile.refresh_from_db()
    assert profile.skills == kept
    campaign = CampaignFactory(required_skills=["law"])
    ItemFactory(campaign=campaign)
    if "law" in kept:
        assert reviews.assignment_claim(campaign=campaign, expert=expert) is not None
