"""OpenAPI helpers that work with drf-spectacular installed and do nothing without it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from drf_spectacular.types import OpenApiTypes
    from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view

    HAS_SPECTACULAR = True
except ImportError:  # drf-spectacular is the optional "openapi" extra.
    HAS_SPECTACULAR = False

    class OpenApiTypes:  # type: ignore[no-redef]
        """Stand-ins for the type names used in the annotations."""

        UUID = STR = INT = DATETIME = OBJECT = None

    class OpenApiParameter:  # type: ignore[no-redef]
        """Accepts the arguments and keeps nothing."""

        QUERY = PATH = "query"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    def extend_schema(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:  # type: ignore[misc]
        """Leave the view as it is."""
        return lambda target: target

    def extend_schema_view(**kwargs: Any) -> Callable[[Any], Any]:  # type: ignore[misc]
        """Leave the view as it is."""
        return lambda target: target


__all__ = [
    "HAS_SPECTACULAR",
    "OpenApiParameter",
    "OpenApiTypes",
    "extend_schema",
    "extend_schema_view",
]
