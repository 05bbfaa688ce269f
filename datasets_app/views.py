"""Pages for ML engineers: datasets, their versions, files and cards."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from datasets_app import services
from datasets_app.selectors import dataset_get_for_user, datasets_for_user, version_card
from feedback.errors import DomainError, NotFound
from feedback.models import User


def _engineer(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    if not user.manages_campaigns:
        raise DjangoPermissionDenied("Datasets are for admins and ML engineers.")
    return user


@login_required
@require_GET
def datasets_page(request: HttpRequest) -> HttpResponse:
    user = _engineer(request)
    datasets = datasets_for_user(user=user).prefetch_related("campaigns", "versions")
    return render(request, "datasets_app/datasets.html", {"datasets": datasets})


@login_required
@require_GET
def dataset_page(request: HttpRequest, dataset_id: int) -> HttpResponse:
    user = _engineer(request)
    try:
        dataset = dataset_get_for_user(user=user, dataset_id=dataset_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    versions = list(dataset.versions.all())
    wanted = request.GET.get("v")
    shown = next((v for v in versions if str(v.number) == wanted), None) or next(
        (v for v in versions if v.status == "ready"), None
    )
    return render(
        request,
        "datasets_app/dataset.html",
        {
            "dataset": dataset,
            "versions": versions,
            "shown": shown,
            "card": version_card(version=shown) if shown else "",
        },
    )


@login_required
@require_POST
def dataset_build(request: HttpRequest, dataset_id: int) -> HttpResponse:
    user = _engineer(request)
    try:
        dataset = dataset_get_for_user(user=user, dataset_id=dataset_id)
        version = services.dataset_version_create(dataset=dataset, actor=user)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("dataset-page", dataset_id=dataset_id)
    messages.success(request, f"Version {version.number} is queued; reload to see its status.")
    return redirect("dataset-page", dataset_id=dataset_id)
