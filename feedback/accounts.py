"""Sign-up is by invitation only; an invitation carries the new user's role and email."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from django import forms
from django.contrib import messages
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.shortcuts import redirect

from feedback import services
from feedback.errors import Conflict
from feedback.models import Invitation, User

SESSION_KEY = "invitation_token"
USED_MESSAGE = (
    "This invitation was used or has expired, so no account was created. "
    "Sign in if the account is yours, or ask an admin for a new link."
)


def _pending_invitation(request: HttpRequest) -> Invitation | None:
    token = request.session.get(SESSION_KEY)
    return services.invitation_find(token=token) if token else None


class InviteOnlyAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return _pending_invitation(request) is not None

    def clean_email(self, email: str) -> str:
        email = super().clean_email(email)
        # clean_email also runs for password resets and email changes; only sign-up is bound
        # to the invited address, so a forwarded link cannot make an account for someone else.
        request = self.request
        match = getattr(request, "resolver_match", None)
        if request is None or match is None or match.url_name != "account_signup":
            return email
        invitation = _pending_invitation(request)
        if invitation is not None and email.strip().lower() != invitation.email:
            raise forms.ValidationError(
                f"This invitation is for {invitation.email}; sign up with that address."
            )
        return email

    def save_user(self, request: HttpRequest, user: Any, form: Any, commit: bool = True) -> Any:
        token = request.session.get(SESSION_KEY)
        if not commit or not token:
            return super().save_user(request, user, form, commit=commit)
        try:
            with transaction.atomic():
                # The invitation is locked before the user row exists: a second sign-up with
                # the same link waits here, then finds it used and creates nothing.
                invitation = services.invitation_find(token=token, for_update=True)
                if invitation is None:
                    raise Conflict("This invitation was already used or has expired.")
                user = super().save_user(request, user, form, commit=True)
                services.invitation_accept(invitation=invitation, user=user)
        except (Conflict, IntegrityError) as exc:
            # IntegrityError: the address got an account meanwhile (two invitations, one person).
            if (
                isinstance(exc, IntegrityError)
                and not User.objects.filter(email=user.email).exists()
            ):
                raise
            request.session.pop(SESSION_KEY, None)
            messages.error(request, USED_MESSAGE)
            raise ImmediateHttpResponse(redirect("account_login")) from None
        request.session.pop(SESSION_KEY, None)
        # The link went to this address and sign-up is bound to it, so the address is
        # verified: no confirmation email, and MFA (which needs a verified address) is open.
        self.stash_verified_email(request, invitation.email)
        return user
