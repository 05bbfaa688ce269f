"""Pages of the core domain: the home page and the invitation landing."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from feedback import services
from feedback.accounts import SESSION_KEY
from feedback.models import User
from feedback.selectors import campaigns_for_user
from reviews.selectors import campaign_progress


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    assert isinstance(user, User)
    campaigns = list(campaigns_for_user(user=user).order_by("name"))
    rows = [
        {"campaign": c, "progress": campaign_progress(campaign=c, expert=user)} for c in campaigns
    ]
    return render(request, "feedback/home.html", {"rows": rows})


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
