"""How much a second thread is worth on this machine, right now, and over time.

    python tools/scaling_spells.py              # 60 s; needs threadpoolctl for the SGEMM
    python tools/scaling_spells.py --seconds 300 --hidden 32

Every round times, in this process and one right after the other: the LSTM training
call (`loss_and_grad`, T=100, B=32, I=2) on one Numba thread and on all of them, a
384 x 384 x 384 SGEMM through numpy's BLAS on one thread and on all of them
(threadpoolctl), and a compute-only loop (independent FMA chains, no memory traffic)
on one thread and on all. It prints the three speedups per round and, at the end,
how many rounds had a two-thread LSTM call no faster than the one-thread one.

Why: on the shared 2-core development VM the benchmark's ratios against torch came in
two modes. In spells of seconds to minutes the LSTM call on two threads ran 0.7-0.9x as
fast as on one, while one-thread times did not move and the compute-only loop kept its
~1.9x; the SGEMM mostly lost scaling too (90 s on 2026-11-27: 1.53x on average in the
147 spell rounds, against 1.87x in the other 318). A row of
`python -m optbench kernels --section models` whose numba_ms is near or above its
serial_ms ran in such a spell. Run this before quoting figures.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from numba import njit, prange


@njit(fastmath=True)
def _chains(a, n):
    b = a.copy()
    for _ in range(n):
        for j in range(b.size):
            b[j] = b[j] * np.float32(0.999) + np.float32(0.001)
    return b[0]


@njit(parallel=True, fastmath=True)
def _compute_only(a, n, out):
    for t in prange(out.size):
        out[t] = _chains(a, n)


def _median_ms(fn, calls):
    fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args(argv)

    from optbench import nn

    threads = numba.get_num_threads()
    model = nn.build("lstm", 2, args.hidden, 1, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 100, 2)).astype(np.float32)
    y = rng.standard_normal((32, 1)).astype(np.float32)
    a, b = rng.standard_normal((2, 384, 384)).astype(np.float32)
    chains, out = np.ones(256, np.float32), np.zeros(threads, np.float32)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
        print("threadpoolctl is not installed: no SGEMM column (pip install threadpoolctl)")

    def on(n, fn, calls):
        """Median ms of fn on n Numba threads (the count set outside the timed calls)."""
        numba.set_num_threads(n)
        try:
            return _median_ms(fn, calls)
        finally:
            numba.set_num_threads(threads)

    def sgemm(n):
        with threadpool_limits(n):  # outside the timed calls: it inspects the libraries
            return _median_ms(lambda: a @ b, 30)

    print(f"{threads} threads; speedup of all threads over one, per round:")
    print("  lstm   sgemm  compute   (lstm ms: 1 thread / all)")
    end, rounds, slower = time.time() + args.seconds, 0, 0
    while time.time() < end:
        lstm = [on(n, lambda: model.loss_and_grad(x, y), 30) for n in (1, threads)]
        blas = ([sgemm(n) for n in (1, threads)] if threadpool_limits
                else [float("nan")] * 2)
        work = [on(n, lambda: _compute_only(chains, 20000, out), 5) for n in (1, threads)]
        rounds += 1
        slower += lstm[1] >= lstm[0]
        print(f"{lstm[0] / lstm[1]:6.2f} {blas[0] / blas[1]:7.2f} {work[0] / work[1]:8.2f}"
              f"   ({lstm[0]:.3f} / {lstm[1]:.3f})", flush=True)
    print(f"{slower} of {rounds} rounds: the LSTM call no faster on {threads} threads than on one")


if __name__ == "__main__":
    main()
