"""Sign-up is by invitation only; an invitation carries the new user's role."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest

from feedback import services

SESSION_KEY = "invitation_token"


class InviteOnlyAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        token = request.session.get(SESSION_KEY)
        return bool(token and services.invitation_find(token=token))

    def save_user(self, request: HttpRequest, user: Any, form: Any, commit: bool = True) -> Any:
        user = super().save_user(request, user, form, commit=commit)
        token = request.session.pop(SESSION_KEY, None)
        invitation = services.invitation_find(token=token) if token else None
        if invitation is not None and commit:
            services.invitation_accept(invitation=invitation, user=user)
        return user
