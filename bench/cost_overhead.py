"""What measuring each attempt's cost (``MEASURE_COST``) costs: recorded tasks per second, on/off.

    .venv/bin/python bench/cost_overhead.py --tasks 300 --rounds 5

In one process, against the test project's database (``DATABASE_URL``, SQLite by default):
run ``shop.three_queries`` eagerly (``apply()``: the same signals, receivers and recorder as in a
worker, each event written in its signal) ``--tasks`` times with the measurement off, then on,
alternating for ``--rounds`` rounds. Each round's ratio compares two runs seconds apart; the
median of the ratios is reported, steadier than a ratio of medians on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test.utils import override_settings

    from django_tasks_hub.models import Task
    from testproject.tasks import three_queries

    call_command("migrate", verbosity=0)
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"cost overhead: {opts.tasks} eager shop.three_queries x {opts.rounds} rounds, "
          f"{engine}, {os.cpu_count()} cores, load {load}")  # fmt: skip

    def rate(measure: bool) -> float:
        with override_settings(TASKS_HUB={**settings.TASKS_HUB, "MEASURE_COST": measure}):
            began = time.perf_counter()
            for _ in range(opts.tasks):
                three_queries.apply()
            return opts.tasks / (time.perf_counter() - began)

    rate(True)  # Warm-up: imports, connections, caches.
    ratios = []
    for round_ in range(opts.rounds):
        off, on = rate(False), rate(True)
        ratios.append(on / off)
        print(f"  round {round_ + 1}: off {off:7.1f}/s  on {on:7.1f}/s  on/off {on / off:.3f}")
    print(f"on/off, median of {opts.rounds} rounds: {statistics.median(ratios):.3f}")
    Task.objects.filter(name="shop.three_queries").delete()


if __name__ == "__main__":
    main()
