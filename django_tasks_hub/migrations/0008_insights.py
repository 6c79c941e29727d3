"""Insights: related objects, publishing transactions, cost per attempt, release (issue 16)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_tasks_hub", "0007_rollups"),
    ]

    operations = [
        migrations.AddField(
            model_name="taskrun",
            name="db_queries",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="SQL queries the task body made, on every database (savepoints and the hub's own writes not counted).",
                null=True,
                verbose_name="database queries",
            ),
        ),
        migrations.AddField(
            model_name="taskrun",
            name="db_time",
            field=models.FloatField(
                blank=True,
                help_text="Time the task body spent in those queries.",
                null=True,
                verbose_name="database time (seconds)",
            ),
        ),
        migrations.AddField(
            model_name="taskrun",
            name="memory_growth",
            field=models.PositiveBigIntegerField(
                blank=True,
                help_text="How much the run raised its process's peak resident memory.",
                null=True,
                verbose_name="memory growth (bytes)",
            ),
        ),
        migrations.AddField(
            model_name="taskrun",
            name="release",
            field=models.CharField(
                blank=True,
                default="",
                help_text="The release the worker ran (TASKS_HUB['RELEASE']).",
                max_length=64,
                verbose_name="release",
            ),
        ),
        migrations.CreateModel(
            name="TaskTransaction",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("broker_id", models.CharField(max_length=255, verbose_name="broker id")),
                (
                    "alias",
                    models.CharField(
                        help_text="The alias whose atomic() block published.",
                        max_length=64,
                        verbose_name="database",
                    ),
                ),
                (
                    "outcome",
                    models.CharField(
                        blank=True,
                        choices=[("committed", "committed"), ("rolled_back", "rolled back")],
                        default="",
                        max_length=16,
                        verbose_name="outcome",
                    ),
                ),
                (
                    "ended_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="Commit or rollback, publisher's clock.",
                        null=True,
                        verbose_name="ended at",
                    ),
                ),
                (
                    "first_started_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="Worker's clock.",
                        null=True,
                        verbose_name="first started at",
                    ),
                ),
                (
                    "started_before_commit",
                    models.BooleanField(
                        default=False,
                        help_text="A worker's start was recorded before the commit was.",
                        verbose_name="started before commit",
                    ),
                ),
            ],
            options={
                "verbose_name": "publishing transaction",
                "verbose_name_plural": "publishing transactions",
                "indexes": [
                    models.Index(
                        condition=models.Q(
                            ("started_before_commit", True),
                            ("outcome", "rolled_back"),
                            _connector="OR",
                        ),
                        fields=["broker_id"],
                        name="th_tx_warning_idx",
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("broker_id",), name="th_tx_broker_id_uniq")
                ],
            },
        ),
        migrations.CreateModel(
            name="TaskRelation",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "object_id",
                    models.CharField(
                        help_text="The linked object's primary key, as text.",
                        max_length=255,
                        verbose_name="object id",
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, verbose_name="created at"
                    ),
                ),
                (
                    "content_type",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="contenttypes.contenttype",
                        verbose_name="content type",
                    ),
                ),
                (
                    "task",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="relations",
                        to="django_tasks_hub.task",
                        verbose_name="task",
                    ),
                ),
            ],
            options={
                "verbose_name": "related object",
                "verbose_name_plural": "related objects",
                "indexes": [
                    models.Index(
                        fields=["content_type", "object_id"], name="th_relation_object_idx"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("task", "content_type", "object_id"), name="th_relation_uniq"
                    )
                ],
            },
        ),
    ]
