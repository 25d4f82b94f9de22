from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_slow")]

    operations = [
        migrations.AddField(model_name="product", name="sku", field=models.CharField(default="", max_length=32)),
    ]
