"""The default run on a busy machine: start N busy-loop processes, run `python -m optbench
run` as a user would, and report its wall time.

    python tools/busy_quick.py --busy 0            # quick on a quiet machine (the reference)
    python tools/busy_quick.py --busy 2            # quick beside two processes that spin
    python tools/busy_quick.py --busy 2 -- --threads 2 --timeout 600   # the alternative: one
                                                   # process, two Numba threads (stopped at 10 min)

Each run writes into a fresh temporary directory (no report) and compiles nothing new
(the kernels are cached after the first run of the checkout: run once beforehand, or take
the second of two runs). It prints the run's plan line (how many processes and threads it
chose, and why), then one line: wall seconds, cells stored, and whether it was stopped.
The target: the default `quick` on 2 cores beside two busy processes takes at most about
twice its time on the same machine when quiet.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPIN = "while True: pass"


def stored(directory: str) -> int:
    path = os.path.join(directory, "optbench.sqlite")
    if not os.path.exists(path):
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM cells WHERE finished_at IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes (default 2)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop the run after this many seconds and count its cells")
    args = parser.parse_args(argv)
    timeout = args.timeout
    if "--timeout" in extra:  # allowed after `--` as well, as in the docstring
        i = extra.index("--timeout")
        timeout = float(extra[i + 1])
        extra = extra[:i] + extra[i + 2:]
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
    try:
        time.sleep(1.0 if spinners else 0.0)  # let the machine look busy to the probe
        with tempfile.TemporaryDirectory(prefix="busy_quick-") as out:
            cmd = [sys.executable, "-m", "optbench", "run", args.preset, "--out", out,
                   "--quiet", "--no-report", *extra]
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            plan = proc.stderr.readline().strip()
            print(plan, flush=True)
            stopped = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                stopped = True
            seconds = time.perf_counter() - started
            rest = proc.stderr.read()
            cells = stored(out)
        if proc.returncode not in (0, -9) and not stopped:
            print(rest, file=sys.stderr)
            return 1
        load = os.getloadavg()[0]
        print(f"busy={args.busy} preset={args.preset} args={' '.join(extra) or '-'}: "
              f"{seconds:.1f} s wall, {cells} cells stored"
              + (" (stopped at the timeout)" if stopped else "")
              + f"; 1-min load average at the end {load:.2f}", flush=True)
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
