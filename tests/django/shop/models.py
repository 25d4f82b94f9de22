from django.db import models


class Product(models.Model):
    name = models.CharField(max_length=100)
    sku = models.CharField(max_length=32, default="")
    created = models.DateTimeField(auto_now_add=True)
