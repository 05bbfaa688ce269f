from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback import services
from feedback.models import User


class Command(BaseCommand):
    help = "Create an API key for a user and print it once; only its hash is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("--name", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(email=options["email"].strip().lower()).first()
        if user is None:
            raise CommandError(f"No user {options['email']!r}; create one with add_user first.")
        _, raw = services.api_key_create(user=user, name=options["name"])
        self.stdout.write(raw)
