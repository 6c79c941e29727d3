"""Every tasks-hub route: ``path("api/", include("django_tasks_hub.urls"))`` mounts them."""

from __future__ import annotations

from django_tasks_hub.api.control import QueueViewSet, WorkerViewSet
from django_tasks_hub.api.routers import create_task_helpers_router
from django_tasks_hub.api.serializers import TaskSerializer
from django_tasks_hub.models import Task

app_name = "tasks_hub"

router = create_task_helpers_router(Task.objects.all(), TaskSerializer, basename="task")
router.register("workers", WorkerViewSet, basename="worker")
router.register("queues", QueueViewSet, basename="queue")
router.root_links.update({"workers": "worker-list", "queues": "queue-list"})
urlpatterns = router.urls
