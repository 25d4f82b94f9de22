"""A data migration that takes SLOW_MIGRATION_SECONDS (default 0) to run, so tests
can act while a migration is in progress. It also counts its runs in
shop_migration_run, so tests can prove it ran exactly once."""
import os
import time

from django.db import migrations


def run(apps, schema_editor):
    print("shop.0002_slow: started", flush=True)
    time.sleep(float(os.environ.get("SLOW_MIGRATION_SECONDS", "0")))
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("INSERT INTO shop_migration_run (name) VALUES ('0002_slow')")


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "CREATE TABLE shop_migration_run (name varchar(64) NOT NULL)",
            "DROP TABLE shop_migration_run",
        ),
        migrations.RunPython(run, migrations.RunPython.noop),
    ]
