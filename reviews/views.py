"""The review workspace: claim, judge, submit; the next item arrives through htmx."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from feedback.errors import DomainError
from feedback.models import Campaign, User
from feedback.selectors import campaign_get_for_user
from reviews import services
from reviews.models import Assignment
from reviews.selectors import assignment_get_for_expert, blind_responses, campaign_progress


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def body_from_form(campaign: Campaign, post: QueryDict, response_ids: list[int]) -> dict[str, Any]:
    """Turn the review form into the API's submit body, so both paths share one validation."""
    body: dict[str, Any] = {"rationale": post.get("rationale", ""), "flags": post.getlist("flags")}
    ratings: dict[str, dict[str, int | str]] = {}
    for key in post:
        value = post.get(key, "")
        if key.startswith("rating-") and value != "":
            _, rid, criterion = key.split("-", 2)
            ratings.setdefault(rid, {})[criterion] = (
                int(value) if value.lstrip("-").isdigit() else value
            )
    if ratings:
        body["ratings"] = ratings
    if campaign.kind == Campaign.Kind.PAIRWISE:
        strength = post.get("strength", "1")
        body["preference"] = {
            "chosen": post.get("chosen"),
            "strength": int(strength) if strength.isdigit() else strength,
        }
    elif campaign.kind == Campaign.Kind.RANKING:
        body["ranking"] = post.getlist("ranking")
    elif campaign.kind == Campaign.Kind.CORRECTION:
        body["correction"] = {
            "response": post.get("correction_response")
            or (response_ids[0] if response_ids else None),
            "text": post.get("correction_text", ""),
        }
    seconds = post.get("active_seconds", "")
    if seconds.isdigit():
        body["active_seconds"] = int(seconds)
    return body


def _workspace_context(
    request: HttpRequest, assignment: Assignment, **extra: Any
) -> dict[str, Any]:
    campaign = assignment.campaign
    return {
        "assignment": assignment,
        "campaign": campaign,
        "item": assignment.item,
        "responses": blind_responses(assignment=assignment),
        "progress": campaign_progress(campaign=campaign, expert=_user(request)),
        "skip_reasons": services.SKIP_REASONS,
        "errors": {},
        **extra,
    }


def _render_workspace(
    request: HtmxHttpRequest, assignment: Assignment, status: int = 200, **extra: Any
) -> HttpResponse:
    template = "reviews/review.html"
    if request.htmx:
        template += "#workspace"
    response = render(
        request, template, _workspace_context(request, assignment, **extra), status=status
    )
    if request.htmx:
        response["HX-Push-Url"] = reverse("review-page", args=[assignment.pk])
    return response


def _claim_next(request: HtmxHttpRequest, campaign: Campaign) -> HttpResponse:
    try:
        assignment = services.assignment_claim(campaign=campaign, expert=_user(request))
    except DomainError as exc:
        messages.error(request, exc.message)
        return _to_home(request)
    if assignment is None:
        messages.info(request, f"Nothing left for you in “{campaign.name}” right now. Thank you!")
        return _to_home(request)
    if request.htmx:
        return _render_workspace(request, assignment)
    return redirect("review-page", assignment_id=assignment.pk)


def _to_home(request: HtmxHttpRequest) -> HttpResponse:
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = reverse("home")
        return response
    return redirect("home")


@login_required
@require_POST
def start(request: HtmxHttpRequest, campaign_id: int) -> HttpResponse:
    try:
        campaign = campaign_get_for_user(user=_user(request), campaign_id=campaign_id)
    except DomainError as exc:
        return HttpResponse(exc.message, status=exc.status)
    return _claim_next(request, campaign)


@login_required
@require_GET
def review_page(request: HtmxHttpRequest, assignment_id: int) -> HttpResponse:
    try:
        assignment = assignment_get_for_expert(expert=_user(request), assignment_id=assignment_id)
    except DomainError as exc:
        return HttpResponse(exc.message, status=exc.status)
    if not assignment.is_live:
        messages.warning(
            request,
            "That item is no longer yours: it was submitted, skipped, or its lease expired "
            "and it went back to the queue.",
        )
        return redirect("home")
    return _render_workspace(request, assignment)


@login_required
@require_POST
def review_submit(request: HtmxHttpRequest, assignment_id: int) -> HttpResponse:
    user = _user(request)
    try:
        assignment = assignment_get_for_expert(expert=user, assignment_id=assignment_id)
    except DomainError as exc:
        return HttpResponse(exc.message, status=exc.status)
    response_ids = [r["id"] for r in blind_responses(assignment=assignment)]
    body = body_from_form(assignment.campaign, request.POST, response_ids)
    try:
        services.review_submit(assignment_id=assignment.pk, expert=user, body=body)
    except DomainError as exc:
        if exc.status == 400:
            return _render_workspace(
                request,
                assignment,
                status=422 if request.htmx else 400,
                errors=exc.fields,
                error_message=exc.message,
                form=request.POST,
            )
        messages.error(request, exc.message)
        return _to_home(request)
    messages.success(request, "Review saved.")
    return _claim_next(request, assignment.campaign)


@login_required
@require_POST
def review_skip(request: HtmxHttpRequest, assignment_id: int) -> HttpResponse:
    user = _user(request)
    try:
        assignment = services.assignment_skip(
            assignment_id=assignment_id,
            expert=user,
            reason=request.POST.get("reason", ""),
            note=request.POST.get("note", ""),
        )
    except DomainError as exc:
        messages.error(request, exc.message)
        return _to_home(request)
    messages.info(request, "Skipped; you will not be offered that item again.")
    return _claim_next(request, assignment.campaign)
