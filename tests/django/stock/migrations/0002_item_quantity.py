from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]

    operations = [
        migrations.AddField(model_name="item", name="quantity", field=models.IntegerField(default=0)),
    ]
