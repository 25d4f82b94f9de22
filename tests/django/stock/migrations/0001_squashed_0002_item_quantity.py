"""0001 and 0002 squashed (`manage.py squashmigrations inventory 0002`): a fresh
database applies this one, a database that has both applies nothing, and
Django then records this name too."""
from django.db import migrations, models


class Migration(migrations.Migration):
    replaces = [("inventory", "0001_initial"), ("inventory", "0002_item_quantity")]
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("quantity", models.IntegerField(default=0)),
            ],
        ),
    ]
