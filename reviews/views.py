"""The review workspace: claim, judge, submit; the next item arrives through htmx.

Also the expert's history of their own reviews and a lead's list of a campaign's reviews.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from feedback.errors import DomainError, NotFound, error_body
from feedback.item_input import lf_newlines
from feedback.models import Campaign, User
from feedback.selectors import campaign_get_for_user
from reviews import services
from reviews.models import Assignment, Review
from reviews.selectors import (
    assignment_get_for_expert,
    blind_responses,
    campaign_progress,
    reviews_for_expert,
)
from reviews.workspace import FormState, draft_from_post, form_int, workspace_build


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


SIGNED_OUT = (
    "You are signed out, so nothing was saved. Your work is still on the page: sign in again"
    " in another tab, then come back to this one and try again."
)


View = Callable[..., HttpResponse]


def signed_in(*, script_only: bool = False) -> Callable[[View], View]:
    """login_required for the review pages, except that a script's request gets 401 in the
    API's error format instead of a redirect to the sign-in page.

    A script follows that redirect without being asked and receives the sign-in page with a
    200: the autosave's fetch took it for "draft saved", and htmx swapped it into the
    workspace over the expert's unsent answer. htmx requests, and every request to an
    endpoint only scripts call (`script_only`), are told plainly instead.
    """

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.user.is_authenticated:
                return view(request, *args, **kwargs)
            if script_only or request.htmx:
                return JsonResponse(error_body("not_authenticated", SIGNED_OUT), status=401)
            return redirect_to_login(request.get_full_path())

        # Read by the 400 handler (feedback.api_paths.bad_request): a body Django refuses
        # before the view runs is answered in JSON here too.
        guarded.script_only = script_only  # type: ignore[attr-defined]
        return guarded

    return decorate


def _problem(request: HttpRequest, exc: DomainError, **unsent: str) -> HttpResponse:
    """The refusal as a page; `unsent` texts the expert had typed are shown to copy."""
    context = {"message": exc.message, "status": exc.status, **unsent}
    return render(request, "problem.html", context, status=exc.status)


def body_from_form(campaign: Campaign, post: QueryDict, response_ids: list[int]) -> dict[str, Any]:
    """Turn the review form into the API's submit body, so both paths share one validation."""
    # Line breaks as LF, as the page's script and the API send them: a form sent without the
    # script has CRLF, which would be stored so (and a repeat of it differ from the review).
    body: dict[str, Any] = {
        "rationale": lf_newlines(post.get("rationale", "")),
        "flags": post.getlist("flags"),
    }
    ratings: dict[str, dict[str, int | str]] = {}
    for key in post:
        value = post.get(key, "")
        if key.startswith("rating-") and key.count("-") >= 2 and value != "":
            _, rid, criterion = key.split("-", 2)
            score = form_int(value)
            # Not a number: sent as typed, for review_parse to name the field.
            ratings.setdefault(rid, {})[criterion] = value if score is None else score
    if ratings:
        body["ratings"] = ratings
    if campaign.kind == Campaign.Kind.PAIRWISE:
        strength = post.get("strength", "1")
        strength_value = form_int(strength)
        body["preference"] = {
            "chosen": post.get("chosen"),
            "strength": strength if strength_value is None else strength_value,
        }
    elif campaign.kind == Campaign.Kind.RANKING:
        body["ranking"] = post.getlist("ranking")
    elif campaign.kind == Campaign.Kind.CORRECTION:
        body["correction"] = {
            "response": post.get("correction_response")
            or (response_ids[0] if response_ids else None),
            "text": lf_newlines(post.get("correction_text", "")),
        }
    # The page's script fills these hidden counts; one it did not fill is left out, not
    # reported to an expert who cannot change it.
    seconds = form_int(post.get("active_seconds", ""))
    if seconds is not None and seconds >= 0:
        body["active_seconds"] = seconds
    pasted = {
        field: count
        for field in ("rationale", "correction")
        if (count := form_int(post.get(f"pasted_{field}", ""))) is not None and count >= 0
    }
    if pasted:
        body["pasted_chars"] = pasted
    return body


def _workspace_context(
    request: HttpRequest,
    assignment: Assignment,
    *,
    state: FormState | None = None,
    errors: dict[str, list[str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    campaign = assignment.campaign
    progress = campaign_progress(campaign=campaign, expert=_user(request))
    return {
        "assignment": assignment,
        "campaign": campaign,
        "item": assignment.item,
        "ws": workspace_build(
            assignment=assignment,
            responses=blind_responses(assignment=assignment),
            state=state,
            errors=errors,
        ),
        "progress": progress,
        "skip_reasons": services.SKIP_REASONS,
        **extra,
    }


def _render_workspace(
    request: HtmxHttpRequest,
    assignment: Assignment,
    status: int = 200,
    *,
    state: FormState | None = None,
    errors: dict[str, list[str]] | None = None,
    **extra: Any,
) -> HttpResponse:
    template = "reviews/review.html"
    partial = request.htmx and not request.htmx.history_restore_request
    if partial:
        template += "#workspace"
    response = render(
        request,
        template,
        _workspace_context(request, assignment, state=state, errors=errors, **extra),
        status=status,
    )
    if partial:
        response["HX-Push-Url"] = reverse("review-page", args=[assignment.pk])
    return response


# Why a submit found the item closed to it, by the service's error code: each is explained
# in its own words on the page, which hands back what the expert had written.
_CLOSED_BY = {
    "lease_expired": "expired",
    "assignment_expired": "expired",
    "already_submitted": "submitted",
    "assignment_skipped": "skipped",
}


def _render_closed(
    request: HtmxHttpRequest,
    assignment: Assignment,
    *,
    why: str,
    unsent: FormState,
    status: int,
) -> HttpResponse:
    """Explain in words why the item takes no more work from this page (`why`: its lease ran
    out, or it was submitted or skipped from another tab), and hand back what the expert had
    written: the form they sent, or the draft last saved on the assignment."""
    template = "reviews/review.html"
    partial = request.htmx and not request.htmx.history_restore_request
    context = {
        "assignment": assignment,
        "campaign": assignment.campaign,
        "closed": why,
        "unsent_rationale": unsent.get("rationale"),
        "unsent_correction": unsent.get("correction_text"),
    }
    return render(request, template + ("#closed" if partial else ""), context, status=status)


def _claim_next(
    request: HtmxHttpRequest, campaign: Campaign, *, handed_in: bool = False
) -> HttpResponse:
    """Claim the next item and show it. `handed_in`: after a submit or skip, which were
    saved, so that no more work comes is news, not an error of what the expert just did."""
    try:
        assignment = services.assignment_claim(campaign=campaign, expert=_user(request))
    except DomainError as exc:
        if handed_in:
            messages.info(request, _no_more_work(request, campaign, exc))
        else:
            messages.error(request, exc.message)
        return _to_home(request)
    if assignment is None:
        messages.info(request, f"Nothing left for you in “{campaign.name}” right now. Thank you!")
        return _to_home(request)
    if request.htmx:
        return _render_workspace(request, assignment)
    return redirect("review-page", assignment_id=assignment.pk)


def _no_more_work(request: HtmxHttpRequest, campaign: Campaign, refused: DomainError) -> str:
    """Why no item follows the one handed in. A campaign the expert may no longer see (closed
    since the claim, a skill they no longer have) is not described, not what it requires:
    as `start` would answer 404, it is said that no more work comes."""
    if refused.status in {403, 409}:
        try:
            campaign_get_for_user(user=_user(request), campaign_id=campaign.pk)
        except NotFound:
            return f"No more work for you in “{campaign.name}” for now."
    return refused.message


def _to(request: HtmxHttpRequest, url: str) -> HttpResponse:
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def _to_home(request: HtmxHttpRequest) -> HttpResponse:
    return _to(request, reverse("home"))


@signed_in()
@require_POST
def start(request: HtmxHttpRequest, campaign_id: int) -> HttpResponse:
    """Resume the expert's live claim in the campaign, or claim the next item."""
    try:
        campaign = campaign_get_for_user(user=_user(request), campaign_id=campaign_id)
    except DomainError as exc:
        return _problem(request, exc)
    return _claim_next(request, campaign)


@signed_in()
@require_GET
def review_page(request: HtmxHttpRequest, assignment_id: int) -> HttpResponse:
    try:
        assignment = assignment_get_for_expert(expert=_user(request), assignment_id=assignment_id)
    except DomainError as exc:
        return _problem(request, exc)
    if assignment.is_live:
        return _render_workspace(request, assignment)
    if assignment.status == Assignment.Status.SUBMITTED:
        # The back button lands here after a submit: show the review where it now lives.
        messages.info(request, "You already submitted that item; it is in your history.")
        return _to(request, reverse("review-history") + f"#assignment-{assignment.pk}")
    if assignment.status in {Assignment.Status.CLAIMED, Assignment.Status.EXPIRED}:
        # A claim past its lease, whether or not the periodic job has marked it yet.
        return _render_closed(
            request,
            assignment,
            why="expired",
            unsent=FormState.from_draft(assignment.draft),
            status=200,
        )
    messages.info(
        request,
        f"That item is no longer yours: it was {assignment.get_status_display().lower()}.",
    )
    return _to_home(request)


@signed_in()
@require_POST
def review_submit(request: HtmxHttpRequest, assignment_id: int) -> HttpResponse:
    user = _user(request)
    try:
        assignment = assignment_get_for_expert(expert=user, assignment_id=assignment_id)
    except DomainError as exc:
        # Gone (its item deleted meanwhile, or another account signed in): what was typed
        # is handed back, as when the lease ran out, not lost with the page.
        sent = FormState.from_post(request.POST)
        return _problem(
            request,
            exc,
            unsent_rationale=sent.get("rationale"),
            unsent_correction=sent.get("correction_text"),
        )
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
                state=FormState.from_post(request.POST),
                errors=exc.fields,
                error_message=exc.message,
            )
        if why := _CLOSED_BY.get(exc.code):
            # Another judgement sent from a stale tab after the item was submitted or skipped
            # in another one: said in words, with the text handed back, not a flash at home
            # naming the API's fields.
            return _render_closed(
                request,
                assignment,
                why=why,
                unsent=FormState.from_post(request.POST),
                status=409,
            )
        messages.error(request, exc.message)
        return _to_home(request)
    messages.success(request, "Review saved.")
    return _claim_next(request, assignment.campaign, handed_in=True)


@signed_in()
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
        if exc.status == 404:
            return _problem(request, exc)
        messages.error(request, exc.message)
        if exc.status in {400, 503}:
            # Refused as sent, or to be sent again in a moment: back to the item, still theirs.
            return _to(request, reverse("review-page", args=[assignment_id]))
        return _to_home(request)
    messages.info(request, "Skipped; you will not be offered that item again.")
    return _claim_next(request, assignment.campaign, handed_in=True)


@signed_in(script_only=True)
@require_POST
def review_draft(request: HtmxHttpRequest, assignment_id: int) -> HttpResponse:
    """Autosave: the review form as it stands, kept on the assignment until submit."""
    try:
        draft = draft_from_post(request.POST)
        services.assignment_save_draft(
            assignment_id=assignment_id, expert=_user(request), draft=draft
        )
    except DomainError as exc:
        return JsonResponse(error_body(exc.code, exc.message, exc.fields), status=exc.status)
    return JsonResponse({"saved_at": draft["saved_at"]})


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    """The expert's own reviews, newest first, with the lead's verdict and note once given."""
    page = Paginator(reviews_for_expert(expert=_user(request)), 25).get_page(
        request.GET.get("page")
    )
    return render(request, "reviews/history.html", {"page": page})


@login_required
@require_GET
def campaign_reviews(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """A lead's read of a campaign's reviews with their rationales (leads and admins only)."""
    user = _user(request)
    if user.role not in {User.Role.LEAD, User.Role.ADMIN}:
        return render(
            request,
            "problem.html",
            {"message": "Only leads and admins read a campaign's reviews.", "status": 403},
            status=403,
        )
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        return _problem(request, NotFound(f"No campaign {campaign_id}."))
    reviews = (
        Review.objects.filter(campaign=campaign)
        .select_related("expert", "item", "chosen")
        .order_by("-created_at", "-id")
    )
    page = Paginator(reviews, 25).get_page(request.GET.get("page"))
    # A lead reviews items too, blind: an item's external_id may name the models compared or
    # say "gold", so leads see items by number, as on the history page; admins by both.
    context = {"campaign": campaign, "page": page, "show_external_ids": user.manages_campaigns}
    return render(request, "reviews/campaign_reviews.html", context)
