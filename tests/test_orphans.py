"""No orphans: when the coordinating process is killed (SIGKILL: no chance to clean up), its
worker processes exit by themselves (they watch their parent), on local processes and on a
Dask LocalCluster. Linux's /proc tells which processes descend from the run: each carries a
marker in its environment."""

import os
import signal
import time
import uuid

import pytest

import helpers

# Cells that train for minutes, so that the workers are busy when the coordinator dies.
LONG = helpers.TINY_TOML.replace("steps = 60", "steps = 1000000").replace(
    "eval_every = 20", "eval_every = 100000")


def descendants(marker: str) -> list[int]:
    """Running processes whose environment holds `marker` (zombies have exited)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rpartition(")")[2].split()[0] == "Z":
                    continue
        except OSError:
            continue
        out.append(int(entry))
    return out


def busy(pid: int) -> bool:
    """A worker that has loaded the kernels (numba's libraries are mapped)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "numba" in f.read()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--workers", "2"], ["--dask-local", "2"]],
                         ids=["workers", "dask-local"])
def test_workers_exit_when_their_coordinator_is_killed(tmp_path, executor):
    config = tmp_path / "long.toml"
    config.write_text(LONG)
    marker = f"OPTBENCH_TEST_RUN={uuid.uuid4().hex}"
    proc = helpers.run_cli("--config", str(config), "--out", str(tmp_path / "out"), "--quiet",
                           "--no-report", *executor, env=dict([marker.split("=")]))
    deadline = time.monotonic() + 240
    while sum(busy(p) for p in descendants(marker) if p != proc.pid) < 2:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.2)
    time.sleep(2.0)  # well into their cells
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)  # not communicate(): orphans would hold its pipes open
    proc.stdout.close()
    proc.stderr.close()
    deadline = time.monotonic() + 30
    try:
        while descendants(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not descendants(marker), "processes outlived the coordinator by 30 s"
    finally:
        for p in descendants(marker):  # leave nothing behind this test either
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
