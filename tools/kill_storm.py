"""SIGKILL `python -m optbench run` at random points, resume it each time, and check that no
finished cell is ever lost, duplicated or changed.

    python tools/kill_storm.py --kills 60            # serial, --workers 2, --dask-local 2
    python tools/kill_storm.py --kills 10 --seed 3 --executors workers

A reference store is made first by one uninterrupted run. Then, round after round into a
fresh directory: start the run on an executor (taken in turn), wait a random 0.5-6 s, and
SIGKILL either the whole process group, the coordinating process alone (its workers must
exit by themselves), or one worker; after each kill every cell in the store must equal the
reference's (results bit for bit, timings aside) and the finished count must not drop.
A round ends by running to completion and comparing the whole store with the reference.
Prints one line per kill and a summary; exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import helpers  # noqa: E402  (tests/helpers.py, importable once sys.path names tests/)

CONFIG = helpers.TINY_TOML.replace("seeds = 2", "seeds = 6").replace(
    "steps = 60", "steps = 1500").replace("eval_every = 20", "eval_every = 100")
EXECUTORS = {"serial": ["--threads", "1"], "workers": ["--workers", "2"],
             "dask": ["--dask-local", "2"]}


def start(config: str, out: str, executor: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "optbench", "run", "--config", config, "--out", out, "--quiet",
         "--no-report", *EXECUTORS[executor]],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)  # its own process group, for killpg


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError):
                continue
    return out


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def check(out: str, reference: str) -> int:
    """Finished cells in `out`, after checking each equals the reference's."""
    import pandas as pd

    if not os.path.exists(os.path.join(out, "optbench.sqlite")):
        return 0
    got = helpers.snapshot(out)
    keys = set(got[0]["key"])
    if not keys:  # killed before its first cell (empty frames differ in dtype only)
        return 0
    ref = helpers.snapshot(reference)
    def plain(frame):  # a column all NULL in a few cells comes back as objects, not floats
        frame = frame.reset_index(drop=True).astype(object)
        return frame.where(frame.notna(), None)

    for mine, theirs, name in zip(got[:3], ref[:3], ("cells", "curves", "profiles")):
        theirs = theirs[theirs["key"].isin(keys)]
        pd.testing.assert_frame_equal(plain(mine), plain(theirs), check_exact=True, obj=name)
    return len(keys)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executors", default="serial,workers,dask")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    executors = args.executors.split(",")
    with tempfile.TemporaryDirectory(prefix="kill_storm-") as tmp:
        config = os.path.join(tmp, "storm.toml")
        with open(config, "w") as f:
            f.write(CONFIG)
        reference = os.path.join(tmp, "reference")
        subprocess.run([sys.executable, "-m", "optbench", "run", "--config", config, "--out",
                        reference, "--quiet", "--no-report"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kills, rounds, how_many = 0, 0, {}
        while kills < args.kills:
            rounds += 1
            out = os.path.join(tmp, f"round{rounds}")
            done = 0
            while kills < args.kills:
                executor = executors[kills % len(executors)]
                proc = start(config, out, executor)
                time.sleep(rng.uniform(0.5, 6.0))
                if proc.poll() is not None:  # it finished: the round is over
                    break
                mode = rng.choice(["group", "coordinator", "worker"])
                workers = children(proc.pid)
                if mode == "worker" and workers:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    try:  # the run carries on without it, or reports the loss; stop it here
                        proc.wait(timeout=rng.uniform(0.5, 3.0))
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                elif mode == "coordinator":
                    proc.send_signal(signal.SIGKILL)
                else:
                    mode = "group"
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                deadline = time.monotonic() + 30
                while group_alive(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.1)  # workers of a killed coordinator exit by themselves
                if group_alive(proc.pid):
                    print(f"kill {kills + 1}: processes outlived the coordinator")
                    os.killpg(proc.pid, signal.SIGKILL)
                    return 1
                kills += 1
                how_many[(executor, mode)] = how_many.get((executor, mode), 0) + 1
                now = check(out, reference)
                if now < done:
                    print(f"kill {kills}: {done - now} finished cells lost")
                    return 1
                print(f"kill {kills:3d} ({executor}, {mode}): {now} cells stored, all equal "
                      "to the reference", flush=True)
                done = now
            subprocess.run([sys.executable, "-m", "optbench", "run", "--config", config,
                            "--out", out, "--quiet", "--no-report"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            helpers.assert_same_results(out, reference)
            print(f"round {rounds}: resumed to completion, equal to the reference", flush=True)
        summary = ", ".join(f"{e}/{m} {n}" for (e, m), n in sorted(how_many.items()))
        print(f"{kills} SIGKILLs over {rounds} rounds ({summary}): no cell lost, duplicated "
              "or changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
