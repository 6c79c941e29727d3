"""The tasks-hub admin: the task list and page, the run history, the schedules page.

The package is cut along its concerns: ``changelist`` (lists that stay fast at scale),
``filters`` (list filters and search), ``display`` (how values are shown), ``actions``
(restart and cancel), ``options`` (the ModelAdmins) and ``control`` (the workers and queues
pages). What a project may import or
(restart and cancel), ``bulk`` (restart and cancel all matching, the bulk jobs) and ``options``
(the ModelAdmins). What a project may import or
subclass is re-exported here.
"""

from __future__ import annotations

from django.contrib import admin

from django_tasks_hub.admin.actions import TaskActionsMixin
from django_tasks_hub.admin.bulk import BulkActionsMixin, BulkJobAdmin, spec_from_changelist
from django_tasks_hub.admin.changelist import (
    EstimatedCountPaginator,
    ScalableListMixin,
    TasksHubChangeList,
    estimated_rows,
)
from django_tasks_hub.admin.control import ControlPageAdmin, QueueAdmin, WorkerAdmin
from django_tasks_hub.admin.display import (
    JSON_SHOWN,
    OutcomeDisplayMixin,
    RunDisplayMixin,
    duration,
    pretty_json,
    short_time,
    status_badge,
)
from django_tasks_hub.admin.filters import (
    NAMES_SHOWN,
    NameFilter,
    StatusFilter,
    WarningFilter,
    distinct_names,
)
from django_tasks_hub.admin.options import (
    NewestRunsFormSet,
    ReadOnlyAdminMixin,
    TaskAdmin,
    TaskRunAdmin,
    TaskRunInline,
)
from django_tasks_hub.admin.related import RELATED_TASKS_SHOWN, RelatedTasksInline
from django_tasks_hub.admin.schedules import ScheduleAdmin
from django_tasks_hub.models import BulkJob, QueuePause, Schedule, Task, TaskRun, Worker

#: Runs shown inline on a task page; the rest are one click away in the run history.
RUNS_SHOWN = 50
#: Children linked from a task page.
CHILDREN_SHOWN = 20

admin.site.register(Task, TaskAdmin)
admin.site.register(TaskRun, TaskRunAdmin)
admin.site.register(Worker, WorkerAdmin)
admin.site.register(QueuePause, QueueAdmin)
admin.site.register(Schedule, ScheduleAdmin)
admin.site.register(BulkJob, BulkJobAdmin)

__all__ = [
    "CHILDREN_SHOWN",
    "JSON_SHOWN",
    "NAMES_SHOWN",
    "RELATED_TASKS_SHOWN",
    "RUNS_SHOWN",
    "BulkActionsMixin",
    "BulkJobAdmin",
    "ControlPageAdmin",
    "EstimatedCountPaginator",
    "NameFilter",
    "NewestRunsFormSet",
    "OutcomeDisplayMixin",
    "QueueAdmin",
    "ReadOnlyAdminMixin",
    "RelatedTasksInline",
    "RunDisplayMixin",
    "ScalableListMixin",
    "ScheduleAdmin",
    "StatusFilter",
    "TaskActionsMixin",
    "TaskAdmin",
    "TaskRunAdmin",
    "TaskRunInline",
    "TasksHubChangeList",
    "WarningFilter",
    "WorkerAdmin",
    "distinct_names",
    "duration",
    "estimated_rows",
    "pretty_json",
    "short_time",
    "spec_from_changelist",
    "status_badge",
]
