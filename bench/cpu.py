"""CPU time per task, by process, of the throughput run: what recording costs the machine.

    .venv/bin/python bench/cpu.py --tasks 10000 --modes bare,hub

For each mode, runs ``throughput.py`` for that mode alone (one round, no latency run) and
samples /proc every ``--interval`` seconds, summing the user and system time each process used
while it ran: the publisher, the worker (main process and pool processes), the PostgreSQL
backends of the bench database and redis-server. Prints microseconds of CPU per task for each,
the total, and the total against the first mode's. On a machine whose cores the run keeps
busy, the throughput ratio follows this one.

Start-up (importing Django and Celery in the publisher and the worker) is counted: the same in
every mode. A process's last ``--interval`` before it exits is not: a fraction of a
millisecond per task at 10,000 tasks.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, ROOT, machine

GROUPS = ("publisher", "worker", "postgres", "redis")
TICKS = os.sysconf("SC_CLK_TCK")


def _group(pid: int, database: str) -> str | None:
    """Which group process ``pid`` is in, or ``None`` for one this run does not measure."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if "bench.publish" in cmdline:
        return "publisher"
    if "celery" in cmdline and " worker " in cmdline:
        return "worker"
    if cmdline.startswith("postgres:") and re.search(rf"\b{re.escape(database)}\b", cmdline):
        return "postgres"  # A backend of the bench database, an autovacuum worker on it.
    if comm == "redis-server":
        return "redis"
    return None


def _ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class Sampler(threading.Thread):
    """Every process's CPU ticks, first and last seen, by pid, until stopped."""

    def __init__(self, database: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.database, self.interval = database, interval
        self.seen: dict[int, tuple[str, int, int]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                pid = int(entry)
                ticks = _ticks(pid)
                if ticks is None:
                    continue
                if pid in self.seen:
                    name, first, _ = self.seen[pid]
                    self.seen[pid] = (name, first, ticks)
                elif (group := _group(pid, self.database)) is not None:
                    self.seen[pid] = (group, ticks, ticks)
            self.done.wait(self.interval)

    def per_group(self) -> dict[str, float]:
        """CPU seconds used by each group while sampled."""
        totals = dict.fromkeys(GROUPS, 0.0)
        for group, first, last in self.seen.values():
            totals[group] += (last - first) / TICKS
        return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--modes", default="bare,hub")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--db-url", default=os.environ.get("BENCH_DATABASE_URL"))
    opts = parser.parse_args()
    modes = [m.strip() for m in opts.modes.split(",") if m.strip()]
    database = (opts.db_url or "postgres:///hub_bench").rsplit("/", 1)[-1]
    print(f"machine: {machine()}")
    print(f"cpu: {opts.tasks} no-op tasks per mode, /proc sampled every {opts.interval} s")
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        args = [PYTHON, "bench/throughput.py", "--tasks", str(opts.tasks), "--modes", mode,
                "--repeat", "1", "--latency-tasks", "0"]  # fmt: skip
        if opts.db_url:
            args += ["--db-url", opts.db_url]
        sampler = Sampler(database, opts.interval)
        sampler.start()
        out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        time.sleep(opts.interval * 2)
        sampler.done.set()
        sampler.join()
        if out.returncode:
            raise RuntimeError(f"throughput.py failed:\n{out.stderr[-3000:]}")
        rates = [line.strip() for line in out.stdout.splitlines() if "round 1" in line]
        print(f"  {rates[0] if rates else mode}")
        results[mode] = sampler.per_group()
    base = sum(results[modes[0]].values())
    header = "".join(f"{g:>11}" for g in GROUPS)
    print(f"\nmode    {header}      total   x {modes[0]}     us of CPU per task")
    for mode, groups in results.items():
        cells = "".join(f"{groups[g] * 1e6 / opts.tasks:>11.0f}" for g in GROUPS)
        total = sum(groups.values())
        print(f"{mode:<8}{cells}{total * 1e6 / opts.tasks:>11.0f}   {total / base:>5.2f}x")


if __name__ == "__main__":
    main()
