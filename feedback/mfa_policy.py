"""Admins work with two factors: an admin without a TOTP authenticator is sent to set one up.

Who counts as an admin here: role ``admin``, or anyone who can open the Django admin
(``is_staff`` / ``is_superuser``), because the admin is where a password alone would do most harm.
Switched by ``MFA_REQUIRED_FOR_ADMINS`` (on by default, the demo included).

Left alone, so that setting up MFA and leaving stay possible: the MFA pages themselves
(``/accounts/2fa/…``), the password re-entry that allauth asks for before activating TOTP, the
email address pages (allauth refuses TOTP while an address is unverified), logout, static files
and ``/healthz``. The API is governed by API keys, not by this policy: a
request with ``Authorization: Bearer …`` passes; an API request that rides on a browser session
of an admin without MFA gets a 403 in the API's error format, so the session cannot be used to
do through the API what the pages refuse.

Independently of the switch, the Django admin's own login form is replaced by allauth's login,
which asks for the TOTP code of users who have one (Django's form would let the password
alone in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from allauth.mfa.models import Authenticator
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect

from feedback.api_keys import bearer_parts
from feedback.api_paths import API_PREFIX
from feedback.errors import error_body
from feedback.models import User

MESSAGE = "Admins must use two-factor authentication: set up an authenticator app to continue."


def mfa_required(user: Any) -> bool:
    """Does this signed-in user have to use a second factor before anything else?"""
    if not getattr(settings, "MFA_REQUIRED_FOR_ADMINS", True):
        return False
    if not (user.role == User.Role.ADMIN or user.is_staff or user.is_superuser):
        return False
    return not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def _bearer(request: HttpRequest) -> bool:
    # As the API reads the scheme.
    return bearer_parts(str(request.META.get("HTTP_AUTHORIZATION", ""))) is not None


class MfaPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def _exempt_prefixes(self) -> tuple[str, ...]:
        # Resolved per request: reverse() needs the URLconf, which is not loaded at start-up.
        return (
            reverse("mfa_index"),
            reverse("account_reauthenticate"),
            # allauth refuses TOTP while an address is unverified; verifying one must stay possible.
            reverse("account_email"),
            reverse("account_email_verification_sent"),
            reverse("account_logout"),
            reverse("healthz"),
            settings.STATIC_URL,
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path.startswith(API_PREFIX) and _bearer(request):
            # Decided first, as it passes whoever the session's user is: no reverse() or
            # session read on the API's every request.
            return self.get_response(request)
        user = request.user
        if not user.is_authenticated:
            if path == reverse("admin:login"):
                return self._to_allauth_login(request)
            return self.get_response(request)
        if path.startswith(self._exempt_prefixes()) or not mfa_required(user):
            return self.get_response(request)
        if path.startswith(API_PREFIX):
            return JsonResponse(error_body("mfa_required", MESSAGE), status=403)
        setup = reverse("mfa_activate_totp")
        if getattr(request, "htmx", False):
            # A partial swapped into a page would show the setup form inside a fragment.
            return HttpResponseClientRedirect(setup)
        if request.method == "GET":
            messages.warning(request, MESSAGE, fail_silently=True)
        return HttpResponseRedirect(setup)

    @staticmethod
    def _to_allauth_login(request: HttpRequest) -> HttpResponse:
        next_url = request.GET.get("next") or reverse("admin:index")
        return HttpResponseRedirect(
            resolve_url(settings.LOGIN_URL) + "?" + urlencode({"next": next_url})
        )
