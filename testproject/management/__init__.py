"""Management commands of the test project: the demo's set-up and its tasks."""
