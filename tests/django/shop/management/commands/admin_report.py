"""Reports, as one JSON line, what Django itself thinks of an admin user: the row's
fields and whether Django's own check_password and authenticate accept a password.
Used by probehost's tests of `ensureadmin`."""
import json

from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("password")

    def handle(self, username, password, **options):
        users = User.objects.filter(username=username)
        report = {"count": User.objects.count(), "matching": users.count()}
        user = users.first()
        if user is not None:
            report.update(
                password=user.password,
                email=user.email,
                first_name=user.first_name,
                last_name=user.last_name,
                is_superuser=user.is_superuser,
                is_staff=user.is_staff,
                is_active=user.is_active,
                last_login=None if user.last_login is None else user.last_login.isoformat(),
                date_joined=user.date_joined.isoformat(),
                check_password=user.check_password(password),
                authenticated=authenticate(username=username, password=password) == user,
            )
        self.stdout.write(json.dumps(report, sort_keys=True))
