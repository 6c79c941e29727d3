"""The test project's admin: an Order page that shows the order's tasks (RelatedTasksInline)."""

from django.contrib import admin

from django_tasks_hub.admin import RelatedTasksInline
from testproject.models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("number", "customer")
    inlines = [RelatedTasksInline]
