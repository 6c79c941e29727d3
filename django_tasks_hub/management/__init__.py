"""Management commands of django-tasks-hub."""
