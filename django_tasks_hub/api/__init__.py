"""The REST API: viewsets, filters, pagination and the router factory (needs DRF)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TaskHubRouter", "convert_to_response", "create_task_helpers_router"]

if TYPE_CHECKING:
    from django_tasks_hub.api.routers import TaskHubRouter, create_task_helpers_router
    from django_tasks_hub.api.views import convert_to_response


def __getattr__(name: str) -> Any:
    # Lazy, so importing the package does not import models before the app registry is ready.
    if name in ("TaskHubRouter", "create_task_helpers_router"):
        from django_tasks_hub.api import routers

        return getattr(routers, name)
    if name == "convert_to_response":
        from django_tasks_hub.api.views import convert_to_response

        return convert_to_response
    raise AttributeError(f"module 'django_tasks_hub.api' has no attribute {name!r}")
