"""Tasks on their business objects: the keys that name an object, and the links written at publish.

An object is named ``<app_label>.<model>:<pk>`` (``shop.order:42``), in the publish headers, in
the API's ``?related=`` and in the ``TaskRelation`` rows (content type and primary key).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction

from django_tasks_hub.events import TaskEvent

logger = logging.getLogger(__name__)

#: The message header carrying the keys of ``services.submit(..., related=[...])``.
RELATED_HEADER = "tasks_hub_related"
#: The Celery task option naming which argument holds which model's primary key.
DECLARATION = "tasks_hub_related"


class BadRelatedKey(ValueError):
    """A key that does not name a model (the API answers 400 with the message)."""


def key_of(obj: models.Model) -> str:
    """``app_label.model:pk`` of a saved model instance."""
    if getattr(obj, "pk", None) is None:
        raise BadRelatedKey(f"{obj!r} has no primary key: save it before linking a task to it.")
    opts = obj._meta
    return f"{opts.app_label}.{opts.model_name}:{obj.pk}"


def parse_key(key: str) -> tuple[type[models.Model], str]:
    """The model and the primary key (text) ``key`` names; :class:`BadRelatedKey` otherwise."""
    label, sep, pk = str(key).partition(":")
    if not sep or not pk or "." not in label:
        raise BadRelatedKey(
            f"{str(key)[:100]!r} is not <app_label>.<model>:<pk>, for example shop.order:42."
        )
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as exc:
        raise BadRelatedKey(f"{label[:100]!r} is not an installed model.") from exc
    return model, pk[:255]


def content_type_of(model: type[models.Model], db: str | None = None) -> ContentType:
    """The content type of ``model`` (Django caches it per process)."""
    return ContentType.objects.db_manager(db).get_for_model(model, for_concrete_model=False)


@functools.lru_cache(maxsize=512)
def _parameters(run: Any) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(run).parameters)
    except (TypeError, ValueError):
        return ()


def declared_keys(task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[str]:
    """The keys a task's ``tasks_hub_related`` declaration finds in its call's arguments.

    ``@app.task(tasks_hub_related={"order_id": "shop.Order"})`` links ``process.delay(7)`` and
    ``process.delay(order_id=7)`` alike to ``shop.order:7``; an argument that is missing or
    ``None`` links nothing.
    """
    declaration = getattr(task, DECLARATION, None)
    if not declaration or not isinstance(declaration, Mapping):
        return []
    names = _parameters(task.run)
    if names and names[0] == "self" and getattr(task, "bind", False):
        names = names[1:]  # A bound task's ``self`` is not in the message's arguments.
    keys: list[str] = []
    for argument, label in declaration.items():
        if kwargs and argument in kwargs:
            value = kwargs[argument]
        elif argument in names and names.index(argument) < len(args or ()):
            value = args[names.index(argument)]
        else:
            continue
        if value is not None:
            keys.append(f"{str(label).lower()}:{value}")
    return keys


def publish_keys(task: Any, args: Any, kwargs: Any, headers: Mapping[str, Any]) -> tuple[str, ...]:
    """Every key a publish links its task to: the explicit header and the declaration."""
    explicit = headers.get(RELATED_HEADER) or ()
    declared = declared_keys(task, args or (), kwargs or {}) if task is not None else []
    return tuple(dict.fromkeys([*map(str, explicit), *declared]))


def write_links(events: Iterable[TaskEvent], task_model: Any, relation_model: Any, db: str) -> None:
    """Write the links of the publishes among ``events`` (after their task rows are written).

    A key that names no model is logged and skipped: a link never fails the recording.
    """
    wanted = [(event.broker_id, key) for event in events if event.related for key in event.related]
    if not wanted:
        return
    pks = dict(
        task_model.objects.using(db)
        .filter(broker_id__in={broker_id for broker_id, _ in wanted})
        .values_list("broker_id", "pk")
    )
    rows = []
    for broker_id, key in wanted:
        if broker_id not in pks:
            continue
        try:
            model, pk = parse_key(key)
        except BadRelatedKey as exc:
            logger.warning("tasks-hub could not link %s: %s", broker_id, exc)
            continue
        rows.append(
            relation_model(
                task_id=pks[broker_id], content_type=content_type_of(model, db), object_id=pk
            )
        )
    try:
        with transaction.atomic(using=db):
            relation_model.objects.using(db).bulk_create(rows, ignore_conflicts=True)
    except IntegrityError:
        logger.warning("tasks-hub could not link %d tasks to their objects", len(rows))
