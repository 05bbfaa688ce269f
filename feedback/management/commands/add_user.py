from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback import services
from feedback.errors import DomainError
from feedback.models import User


class Command(BaseCommand):
    help = "Create a user (or update the role, password and skills of an existing one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--role", required=True, choices=User.Role.values)
        parser.add_argument("--password", default=None)
        parser.add_argument("--skills", default=None, help="Comma-separated, e.g. contracts,python")

    def handle(self, *args: Any, **options: Any) -> None:
        skills = options["skills"].split(",") if options["skills"] is not None else None
        try:
            user = services.user_add(
                email=options["email"],
                role=options["role"],
                password=options["password"],
                skills=skills,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{user.email} ({user.role})")
