"""What an open admin page costs the pipeline: bench/pipeline.py run in pairs, without and with
`sluice admin` and its page open (the overview reloaded every 10 s, the live tail streaming), alternating
so that drift on the machine hits both sides alike.

Run by hand:  .venv/bin/python bench/admin_page.py [--pairs 3] [--events 30000] [--dest AM]
Prints each run's end-to-end events/s, the Postgres CPU per event, the admin's CPU and statements/s, then
the medians and the change in events/s (the issue's bound: no more than 5% lower with the page open).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATTERNS = {
    "events_s": r"end-to-end (\d+) events/s",
    "pg_us": r"Postgres CPU seconds: [\d.]+; per delivered event (\d+) us",
    "statements_s": r"= ([\d.]+) statements/s",
    "admin_core": r"admin CPU [\d.]+s = ([\d.]+)% of a core",
    "items": r"live tail received (\d+) items",
    "sampled": r"(\d+) not shown \(sampled\)",
}


def run(args, page: bool) -> dict:
    cmd = [sys.executable, str(HERE / "pipeline.py"), "--events", str(args.events), "--dest", args.dest,
           "--rate", str(args.rate)]
    if page:
        cmd.append("--admin-page")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        raise SystemExit(f"pipeline.py failed (exit {out.returncode})")
    found = {}
    for key, pattern in PATTERNS.items():
        m = re.search(pattern, out.stdout)
        if m:
            found[key] = float(m.group(1))
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--rate", type=float, default=6000)
    ap.add_argument("--dest", choices=["AM", "WEBHOOK"], default="AM")
    args = ap.parse_args()
    without, with_page = [], []
    for i in range(args.pairs):
        for page, runs in ((False, without), (True, with_page)):
            r = run(args, page)
            runs.append(r)
            extra = (f"; admin {r.get('admin_core', 0):.1f}% of a core, {r.get('statements_s', 0):.1f} statements/s, "
                     f"live tail {r.get('items', 0):.0f} shown / {r.get('sampled', 0):.0f} sampled") if page else ""
            print(f"pair {i + 1} {'with page   ' if page else 'without page'}: {r['events_s']:.0f} events/s, "
                  f"Postgres {r['pg_us']:.0f} us/event{extra}", flush=True)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    base, paged = med(without, "events_s"), med(with_page, "events_s")
    print(f"\nmedian events/s: without page {base:.0f}, with page {paged:.0f} ({(paged / base - 1) * 100:+.1f}%)")
    print(f"median Postgres CPU per event: without {med(without, 'pg_us'):.0f} us, with {med(with_page, 'pg_us'):.0f} us")
    print(f"admin service: {med(with_page, 'admin_core'):.1f}% of a core, "
          f"{med(with_page, 'statements_s'):.1f} statements/s on Postgres")
    return 0


if __name__ == "__main__":
    sys.exit(main())
