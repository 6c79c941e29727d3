"""CPU time per task, by process, of the throughput run: what recording costs the machine.

    .venv/bin/python bench/cpu.py --tasks 10000 --modes bare,hub

For each mode, runs ``throughput.py`` for that mode alone (one round, no latency run) and
samples /proc every ``--interval`` seconds, summing the user and system time each process used
while it ran: the publisher, the worker (main process and pool processes), PostgreSQL (its
backends, those that exited too, and its background processes such as the WAL writer) and
redis-server. Prints microseconds of CPU per task for each, the total, and the total against
the first mode's. On a machine whose cores the run keeps busy, the throughput ratio follows
this one.

Start-up (importing Django and Celery in the publisher and the worker) is counted: the same in
every mode. The publisher's last ``--interval`` before it exits is not: at most 20 us per task
at 10,000 tasks and 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PYTHON, ROOT, machine
from bench.journal_cost import journal_line

GROUPS = ("publisher", "worker", "postgres", "redis")
TICKS = os.sysconf("SC_CLK_TCK")


def _group(pid: int) -> str | None:
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
    if comm == "postgres" or cmdline.startswith("postgres:"):
        return "postgres"  # The server, its backends and its background processes (WAL...).
    if comm == "redis-server":
        return "redis"
    return None


def _ticks(pid: int, children: bool = False) -> int | None:
    """CPU ticks (user + system) of ``pid``, or of its children that have exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    at = 13 if children else 11
    return int(fields[at]) + int(fields[at + 1])


def _postmaster() -> int | None:
    """The PostgreSQL server's main process: it reaps every backend that exits."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _group(int(entry)) == "postgres":
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if not cmdline.startswith(b"postgres:"):
                return int(entry)
    return None


class Sampler(threading.Thread):
    """Every process's CPU ticks, first and last seen, by pid, until stopped."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.seen: dict[int, tuple[str, int, int]] = {}
        self.done = threading.Event()
        # A backend can live less than an interval (django-celery-results opens one per
        # task): those that exit are counted by the server's children's time instead.
        self.postmaster = _postmaster()
        self.reaped = self._reaped()

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
                elif (group := _group(pid)) is not None:
                    self.seen[pid] = (group, ticks, ticks)
            self.done.wait(self.interval)

    def _reaped(self) -> int:
        return (_ticks(self.postmaster, children=True) or 0) if self.postmaster else 0

    def per_group(self) -> dict[str, float]:
        """CPU seconds used by each group while sampled."""
        totals = dict.fromkeys(GROUPS, 0.0)
        for pid, (group, first, last) in self.seen.items():
            if group == "postgres" and not Path(f"/proc/{pid}").exists():
                continue  # Exited: all its time is in the server's children's time.
            totals[group] += (last - first) / TICKS
        totals["postgres"] += (self._reaped() - self.reaped) / TICKS
        return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--modes", default="bare,hub")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--db-url", default=os.environ.get("BENCH_DATABASE_URL"))
    opts = parser.parse_args()
    modes = [m.strip() for m in opts.modes.split(",") if m.strip()]
    print(f"machine: {machine()}")
    print(f"cpu: {opts.tasks} no-op tasks per mode, /proc sampled every {opts.interval} s")
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        args = [PYTHON, "bench/throughput.py", "--tasks", str(opts.tasks), "--modes", mode,
                "--repeat", "1", "--latency-tasks", "0"]  # fmt: skip
        if opts.db_url:
            args += ["--db-url", opts.db_url]
        sampler = Sampler(opts.interval)
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
    if any(mode.startswith("hub") for mode in modes):
        print(journal_line())


if __name__ == "__main__":
    main()
