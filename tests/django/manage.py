#!/usr/bin/env python
"""The Django fixture of probehost's tests: a minimal project whose database comes
from DATABASE_URL, so the jobs meet the application they exist for."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixture.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
