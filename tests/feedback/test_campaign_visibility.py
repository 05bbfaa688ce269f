"""One campaign asked for by id is visible exactly when it is in the user's campaign list."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.db.models import JSONField, Value

from feedback.errors import NotFound
from feedback.models import Campaign, ExpertProfile, Qualification, User
from feedback.selectors import campaign_get_for_user, campaigns_for_user
from tests.feedback.factories import CampaignFactory, UserFactory

pytestmark = pytest.mark.django_db


def _visible_by_id(user: User, campaign: Campaign) -> bool:
    try:
        got = campaign_get_for_user(user=user, campaign_id=str(campaign.pk))
    except NotFound:
        return False
    assert got.pk == campaign.pk
    return True


def test_by_id_agrees_with_the_list_for_every_rule(engineer: User) -> None:
    campaigns = []
    rules = itertools.product(
        [s.value for s in Campaign.Status],
        [False, True],  # requires qualification
        [None, False, True],  # the expert's qualification row, if any
        [[], ["law"], ["law", "tax"]],  # required skills
    )
    expert = UserFactory(role=User.Role.EXPERT, email="skilled@example.test")
    ExpertProfile.objects.update_or_create(user=expert, defaults={"skills": ["law"]})
    for status, requires, qualified, skills in rules:
        campaign = CampaignFactory(
            created_by=engineer,
            status=status,
            requires_qualification=requires,
            required_skills=skills,
        )
        if qualified is not None:
            Qualification.objects.create(campaign=campaign, expert=expert, qualified=qualified)
        campaigns.append(campaign)
    no_profile = UserFactory(role=User.Role.EXPERT, email="bare@example.test")
    ExpertProfile.objects.filter(user=no_profile).delete()
    lead = UserFactory(role=User.Role.LEAD, email="lead@example.test")
    for user in (expert, no_profile, lead, engineer):
        listed = set(campaigns_for_user(user=user).values_list("pk", flat=True))
        by_id = {c.pk for c in campaigns if _visible_by_id(user, c)}
        assert by_id == listed, user.email
    # The rules do hide some and show others, so the comparison above is not vacuous.
    expert_sees = set(campaigns_for_user(user=expert).values_list("pk", flat=True))
    assert 0 < len(expert_sees) < len(campaigns)


@pytest.mark.parametrize(
    "campaign_id",
    ["", "x", "12.5", None, "0", "-3", "9223372036854775808", "99999999999999999999", 10**30],
)
def test_an_id_that_is_no_campaign_is_not_found(expert: User, campaign_id: Any) -> None:
    with pytest.raises(NotFound):
        campaign_get_for_user(user=expert, campaign_id=campaign_id)


def test_skills_stored_as_null_count_as_none(engineer: User) -> None:
    """A profile whose skills are JSON null (written around the model) holds no skills: the
    list and the lookup by id agree, and neither fails."""
    expert = UserFactory(role=User.Role.EXPERT, email="null-skills@example.test")
    ExpertProfile.objects.update_or_create(user=expert, defaults={"skills": []})
    ExpertProfile.objects.filter(user=expert).update(skills=Value(None, JSONField()))
    gated = CampaignFactory(created_by=engineer, required_skills=["law"])
    open_to_all = CampaignFactory(created_by=engineer)

    listed = set(campaigns_for_user(user=expert).values_list("pk", flat=True))

    assert listed == {open_to_all.pk}
    assert not _visible_by_id(expert, gated)
    assert _visible_by_id(expert, open_to_all)
