from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from feedback import services
from feedback.errors import DomainError
from feedback.models import User


class Command(BaseCommand):
    help = "Invite someone to sign up with a role and print the invitation link (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--role", default=User.Role.EXPERT, choices=User.Role.values)
        parser.add_argument(
            "--by", default=None, help="Email of the inviting admin (default: the first admin)."
        )
        parser.add_argument("--days", type=int, default=14, help="Days the link stays valid.")
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Public address of the site, e.g. https://feedback.example.com",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        admins = User.objects.filter(role=User.Role.ADMIN, is_active=True).order_by("pk")
        if options["by"]:
            admins = admins.filter(email=options["by"].strip().lower())
        inviter = admins.first()
        if inviter is None:
            raise CommandError(
                f"No active admin {options['by']!r}."
                if options["by"]
                else "No active admin to invite from; create one with add_user --role admin."
            )
        if options["days"] < 1:
            raise CommandError("--days must be at least 1.")
        email = options["email"].strip().lower()
        if User.objects.filter(email=email).exists():
            raise CommandError(f"{email} already has an account.")
        try:
            _, token = services.invitation_create(
                invited_by=inviter, email=email, role=options["role"], days=options["days"]
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        path = reverse("invitation", kwargs={"token": token})
        self.stdout.write(options["base_url"].rstrip("/") + path)
