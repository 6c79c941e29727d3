"""The report task's serializer: the task fields plus ``report_format``."""

from django_tasks_hub.api.serializers import TASK_FIELDS, TaskSerializer
from testproject.models import ReportTask


class ReportTaskSerializer(TaskSerializer):
    """A report task as the API shows it."""

    class Meta(TaskSerializer.Meta):
        model = ReportTask
        fields = (*TASK_FIELDS, "report_format")
        read_only_fields = fields
