"""Tasks on their business objects: submit(related=...), declarations, the inline, ?related=."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from django_tasks_hub import services
from django_tasks_hub.insight.relations import BadRelatedKey, declared_keys, key_of, parse_key
from django_tasks_hub.models import Task, TaskRelation
from testproject import tasks
from testproject.models import Order
from tests.conftest import wait_status


def linked(order: Order) -> list[str]:
    ct = ContentType.objects.get_for_model(Order)
    return sorted(
        str(pk) for pk in Task.objects.related_to(ct, order.pk).values_list("pk", flat=True)
    )


def staff(*codenames: str) -> User:
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_order", "change_order", *codenames])
    )
    return user


def test_declared_keys_read_positional_and_keyword_arguments():
    assert declared_keys(tasks.process_order, (7,), {}) == ["testproject.order:7"]
    assert declared_keys(tasks.process_order, (), {"order_id": 8}) == ["testproject.order:8"]
    assert declared_keys(tasks.process_order, (None,), {}) == []
    assert declared_keys(tasks.add, (1, 2), {}) == []


@pytest.mark.parametrize("key", ["", "order:1", "testproject.order", "nope.model:1", "x.y.z:1"])
def test_a_bad_key_says_what_a_key_is(key):
    with pytest.raises(BadRelatedKey):
        parse_key(key)


@pytest.mark.worker
def test_submit_links_the_task_to_its_objects(worker, write_mode):
    first, second = Order.objects.create(number="A-1"), Order.objects.create(number="A-2")
    task = services.submit(tasks.add, (1, 2), related=[first, second])
    assert task is not None
    wait_status(task.broker_id, "done")
    from django_tasks_hub import flush

    flush(timeout=10)
    assert linked(first) == linked(second) == [str(task.pk)]
    with pytest.raises(BadRelatedKey):
        services.submit(tasks.add, (1, 2), related=[Order(number="unsaved")])


@pytest.mark.worker
def test_a_declaration_links_plain_delay(worker, write_mode):
    order = Order.objects.create(number="B-1")
    other = Order.objects.create(number="B-2")
    positional = tasks.process_order.delay(order.pk)
    keyword = tasks.process_order.delay(order_id=order.pk, note="again")
    wait_status(positional.id, "done")
    wait_status(keyword.id, "done")
    from django_tasks_hub import flush

    flush(timeout=10)
    assert linked(order) == sorted([positional.id, keyword.id])
    assert linked(other) == []


@pytest.mark.worker
def test_deleting_the_object_keeps_the_history(worker):
    order = Order.objects.create(number="C-1")
    result = tasks.process_order.delay(order.pk)
    wait_status(result.id, "done")
    pk = order.pk
    order.delete()
    ct = ContentType.objects.get_for_model(Order)
    assert list(Task.objects.related_to(ct, pk).values_list("status", flat=True)) == ["done"]
    assert TaskRelation.objects.for_key(ct, pk).count() == 1


def test_the_api_filters_by_related_object(db, eager):
    reader = User.objects.create_user("reader")
    client = Client()
    client.force_login(reader)
    order, other = Order.objects.create(number="D-1"), Order.objects.create(number="D-2")
    mine = services.submit(tasks.add, (1, 1), related=[order])
    services.submit(tasks.add, (2, 2), related=[other])
    assert mine is not None
    answer = client.get("/api/tasks/", {"related": key_of(order)})
    assert answer.status_code == 200, answer.content
    assert [row["id"] for row in answer.json()["results"]] == [str(mine.pk)]
    for bad in ["testproject.order", "nope.thing:1", "order:3"]:
        answer = client.get("/api/tasks/", {"related": bad})
        assert answer.status_code == 400
        assert "<app_label>.<model>:<pk>" in str(answer.json()) or "installed model" in str(
            answer.json()
        ), answer.json()


def test_the_inline_shows_the_objects_tasks_with_their_controls(db, eager, settings):
    settings.TASKS_HUB = {**settings.TASKS_HUB, "CELERY_APP": "testproject.celery.app"}
    order = Order.objects.create(number="E-1")
    done = services.submit(tasks.add, (1, 1), related=[order])
    assert done is not None
    client = Client()
    client.force_login(staff("view_task", "restart_task"))
    page = client.get(f"/admin/testproject/order/{order.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Tasks for this object" in html
    assert "demo.add" in html and "th-badge--done" in html
    assert f"/admin/django_tasks_hub/task/{done.pk}/restart/?next=" in html
    # Restart from the inline comes back to the order's page.
    answer = client.post(
        f"/admin/django_tasks_hub/task/{done.pk}/restart/?next=/admin/testproject/order/{order.pk}/change/"
    )
    assert answer.status_code == 302
    assert answer["Location"] == f"/admin/testproject/order/{order.pk}/change/"
    done.refresh_from_db()
    assert done.attempts == 2
    # No button without the permission, and no tasks without view_task.
    Permission.objects.get(codename="restart_task").user_set.clear()
    client.force_login(User.objects.get(username="ops"))
    html = client.get(f"/admin/testproject/order/{order.pk}/change/").content.decode()
    assert "/restart/?next=" not in html
