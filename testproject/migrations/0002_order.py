"""The test project's Order, the business object RelatedTasksInline is shown on."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("testproject", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Order",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.CharField(max_length=32, unique=True, verbose_name="number")),
                (
                    "customer",
                    models.CharField(
                        blank=True, default="", max_length=100, verbose_name="customer"
                    ),
                ),
            ],
            options={
                "verbose_name": "order",
                "verbose_name_plural": "orders",
            },
        ),
    ]
