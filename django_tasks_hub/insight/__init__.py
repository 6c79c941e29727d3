"""Insight: rollups kept by the database and the overview, stats and metrics built on them;
and what only a hub inside the Django project can show: related objects, transaction mistakes,
database cost per attempt, releases and duplicates (docs/insights.md)."""
