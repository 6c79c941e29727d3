"""URLs of the test project: admin, the tasks-hub API, the report tasks' API and the schema."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from django_tasks_hub.api import create_task_helpers_router
from testproject.models import ReportTask
from testproject.reports import build_report
from testproject.serializers import ReportTaskSerializer

# The same routes for the report tasks, rendered with their own serializer.
reports_router = create_task_helpers_router(
    ReportTask.objects.all(), ReportTaskSerializer, build_report, basename="report"
)

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/django_tasks_hub/task/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/reports/", include((reports_router.urls, "reports"))),
    path("api/", include("django_tasks_hub.urls")),
]

if getattr(settings, "HAS_SPECTACULAR", False):
    from drf_spectacular.views import (
        SpectacularAPIView,
        SpectacularRedocView,
        SpectacularSwaggerView,
    )

    urlpatterns += [
        path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
        path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
        path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    ]
