"""Reads of the core domain, always scoped to the acting user."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery

from feedback.errors import NotFound
from feedback.models import Campaign, ExpertProfile, Qualification, User
from feedback.rows import Columns, read_one


def expert_skills(*, user: User) -> set[str]:
    profile = ExpertProfile.objects.filter(user=user).only("skills").first()
    return set(profile.skills or ()) if profile else set()


def campaigns_for_user(*, user: User) -> QuerySet[Campaign]:
    """Campaigns the user may see.

    Admins, ML engineers and leads see every campaign. An expert sees the active and
    paused campaigns they are eligible for: qualified where qualification is required,
    and holding every required skill (checked in Python: skills lists are short).
    """
    if user.sees_all_campaigns:
        return Campaign.objects.all()
    qualified = Qualification.objects.filter(campaign=OuterRef("pk"), expert=user, qualified=True)
    qs = Campaign.objects.filter(
        status__in=[Campaign.Status.ACTIVE, Campaign.Status.PAUSED]
    ).filter(Q(requires_qualification=False) | Exists(qualified))
    skills = expert_skills(user=user)
    allowed = [c.pk for c in qs.only("pk", "required_skills") if set(c.required_skills) <= skills]
    return Campaign.objects.filter(pk__in=allowed)


_CAMPAIGN = Columns(Campaign)
_CAMPAIGN_SQL = (
    f"SELECT {_CAMPAIGN.select('c')} FROM {Campaign._meta.db_table} c"  # noqa: S608
    " WHERE c.id = %s"
)


def unmet_requirements(*, user: User, campaign: Campaign) -> tuple[set[str], bool]:
    """The campaign's required skills the user lacks, and whether it requires a qualification
    the user does not hold. One query when the campaign requires either, none otherwise."""
    if not campaign.required_skills and not campaign.requires_qualification:
        return set(), False
    asked: dict[str, Subquery | Exists] = {}
    if campaign.required_skills:
        asked["_skills"] = Subquery(
            ExpertProfile.objects.filter(user=OuterRef("pk")).values("skills")[:1]
        )
    if campaign.requires_qualification:
        asked["_qualified"] = Exists(
            Qualification.objects.filter(campaign=campaign, expert=OuterRef("pk"), qualified=True)
        )
    row = User.objects.filter(pk=user.pk).annotate(**asked).values(*asked).first() or {}
    missing = set(campaign.required_skills) - set(row.get("_skills") or ())
    return missing, bool(campaign.requires_qualification and not row.get("_qualified"))


def _expert_may_see(*, user: User, campaign: Campaign) -> bool:
    """campaigns_for_user's rule for one campaign an expert asks for by id, asking the database
    only about what the campaign requires (so in the common case, nothing)."""
    if campaign.status not in {Campaign.Status.ACTIVE, Campaign.Status.PAUSED}:
        return False
    missing, unqualified = unmet_requirements(user=user, campaign=campaign)
    return not missing and not unqualified


def campaign_get_for_user(*, user: User, campaign_id: int | str) -> Campaign:
    """One campaign the user may see (campaigns_for_user), in one query in the common case:
    every claim starts here."""
    try:
        pk = int(campaign_id)
    except (TypeError, ValueError):
        raise NotFound(f"No campaign {campaign_id!r}.") from None
    # A read on the hot path (feedback/rows.py); an id past a 64-bit integer is no campaign
    # (and no database takes it as a parameter).
    campaign = read_one(_CAMPAIGN_SQL, [pk], _CAMPAIGN) if 0 < pk < 2**63 else None
    if campaign is None or not (
        user.sees_all_campaigns or _expert_may_see(user=user, campaign=campaign)
    ):
        raise NotFound(f"No campaign {pk} that you can see.")
    return campaign
