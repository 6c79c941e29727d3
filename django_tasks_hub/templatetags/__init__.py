"""Template tags of the tasks-hub admin."""
