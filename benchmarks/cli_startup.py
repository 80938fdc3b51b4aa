"""CLI start-up: wall time and peak memory of short ``selfsup`` commands in fresh processes.

Each command runs ``--repeats`` times in a fresh interpreter, interleaved with a bare
``python -c "import torch"`` so that every ratio compares runs made under the same machine load
(absolute times on a shared machine drift by 2x with load; the ratio does not). Peak memory is
the child's maximum resident set size (``ru_maxrss``).

    python benchmarks/cli_startup.py [--repeats 5]

Prints JSON: per command the median seconds, median ratio to the torch import timed in the same
rounds, the median peak RSS in MB, and whether the command imported torch at all (``selfsup
--help`` must not). Targets: ``--help`` well under 1 s without torch; ``plugins`` and
``recipe validate`` at most 1.3x the bare torch import.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ("import torch", [sys.executable, "-c", "import torch"])
COMMANDS = {
    "selfsup --help": ["--help"],
    "selfsup plugins": ["plugins"],
    "selfsup plugins --all": ["plugins", "--all"],
    "selfsup recipe validate recipes/quickstart.yaml": ["recipe", "validate", "recipes/quickstart.yaml"],
}
# Reports whether torch was imported, after the command itself ran (at interpreter exit).
TORCH_PROBE = ("import atexit, os, sys; atexit.register(lambda: os.write(int(os.environ['PROBE_FD']), b'1' if 'torch' in sys.modules else b'0'));"
               "from toolkit.cli import main; sys.exit(main(sys.argv[1:]))")


def run_once(command: list[str]) -> tuple[float, float, bool | None]:
    """Seconds, peak RSS (MB) and whether torch was imported, for one fresh process."""
    read, write = os.pipe()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(write,),
                               env={**os.environ, "PROBE_FD": str(write)})
    os.close(write)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    probe = os.read(read, 1)
    os.close(read)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()}")
    process.stderr.close()
    return seconds, usage.ru_maxrss / 1024, (probe == b"1") if probe else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in [REFERENCE[0], *COMMANDS]}
    ratios: dict[str, list[float]] = {name: [] for name in COMMANDS}
    rss: dict[str, list[float]] = {name: [] for name in times}
    imports_torch: dict[str, bool | None] = {}
    for _ in range(args.repeats):
        reference, reference_rss, _ = run_once(REFERENCE[1])
        times[REFERENCE[0]].append(reference)
        rss[REFERENCE[0]].append(reference_rss)
        for name, cli_args in COMMANDS.items():
            seconds, peak, torch_loaded = run_once([sys.executable, "-c", TORCH_PROBE, *cli_args])
            times[name].append(seconds)
            ratios[name].append(seconds / reference)
            rss[name].append(peak)
            imports_torch[name] = torch_loaded
    result = {
        "repeats": args.repeats,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "commands": {
            name: {
                "seconds": round(statistics.median(times[name]), 3),
                "ratio_to_import_torch": round(statistics.median(ratios[name]), 3) if name in ratios else 1.0,
                "peak_rss_mb": round(statistics.median(rss[name]), 1),
                **({"imports_torch": imports_torch[name]} if name in imports_torch else {}),
            }
            for name in times
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
