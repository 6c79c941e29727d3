"""The example second task model: a report-building task with its own field.

``ReportTask`` extends ``Task`` by multi-table inheritance rather than subclassing
``AbstractTask``: its rows are tasks, so the recorder fills in their status, runs and history
as for any task, restart and cancel create runs, and the hub's own routes and admin show them
too. A model built on ``AbstractTask`` would be a separate table the recorder never writes.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _

from django_tasks_hub.models import Task


class ReportTask(Task):
    """A task that builds a report: a ``Task`` row plus the format asked for."""

    class Format(models.TextChoices):
        CSV = "csv", _("CSV")
        PDF = "pdf", _("PDF")
        HTML = "html", _("HTML")

    report_format = models.CharField(
        _("report format"), max_length=8, choices=Format.choices, default=Format.CSV
    )

    class Meta:
        verbose_name = _("report task")
        verbose_name_plural = _("report tasks")


class Order(models.Model):
    """A business object of the test project: the tasks that ran for it show on its admin page
    (``RelatedTasksInline``), and ``shop.process_order`` links itself to it declaratively."""

    number = models.CharField(_("number"), max_length=32, unique=True)
    customer = models.CharField(_("customer"), max_length=100, blank=True, default="")

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")

    def __str__(self) -> str:
        return self.number
