"""An app whose label is not its module name, as in projects that rename an app
(or install two apps of the same name): migrations are recorded under the
label, `inventory`, not under `stock`."""
from django.apps import AppConfig


class StockConfig(AppConfig):
    name = "stock"
    label = "inventory"
    default_auto_field = "django.db.models.BigAutoField"
