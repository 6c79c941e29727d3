"""Benchmarks of django-tasks-hub: each script prints ratios against a baseline of the same run."""
