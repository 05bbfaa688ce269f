"""Pages of the core domain: the home page and the invitation landing."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from feedback import services
from feedback.accounts import SESSION_KEY
from feedback.models import Campaign, User
from feedback.selectors import campaigns_for_user
from reviews.earnings import earnings_summary
from reviews.models import Assignment
from reviews.selectors import campaigns_progress

REVIEWER_ROLES = {User.Role.EXPERT, User.Role.LEAD}


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The campaigns open to the user, their live claims, and (for reviewers) earnings so far.

    The home page is the one page that shows work and money together; it reads each from
    its own module (reviews.selectors, reviews.earnings) rather than joining them here.
    """
    user = request.user
    assert isinstance(user, User)
    campaigns = list(campaigns_for_user(user=user).order_by("name"))
    live = dict(
        Assignment.objects.filter(
            expert=user, status=Assignment.Status.CLAIMED, lease_expires_at__gt=timezone.now()
        ).values_list("campaign_id", "pk")
    )
    reviewer = user.role in REVIEWER_ROLES
    progress = campaigns_progress(campaigns=campaigns, expert=user)
    rows = [
        {
            "campaign": c,
            "progress": progress[c.pk],
            "live_assignment": live.get(c.pk),
            "can_review": reviewer and c.status == Campaign.Status.ACTIVE,
        }
        for c in campaigns
    ]
    return render(
        request,
        "feedback/home.html",
        {
            "rows": rows,
            "earnings": earnings_summary(expert=user) if reviewer else None,
            "reviewer": reviewer,
            "is_lead": user.role in {User.Role.LEAD, User.Role.ADMIN},
        },
    )


@require_GET
def invitation_landing(request: HttpRequest, token: str) -> HttpResponse:
    invitation = services.invitation_find(token=token)
    if invitation is None:
        messages.error(
            request, "This invitation link is invalid, used or expired. Ask an admin for a new one."
        )
        return redirect("account_login")
    request.session[SESSION_KEY] = token
    return redirect(f"/accounts/signup/?email={invitation.email}")
