"""airspeed velocity suites: kernel speed and convergence quality, tracked over commits.

    bench_optim        time_  each optimizer's step, "cpu" at 2^10, 2^16, 2^22 parameters
                              ("cuda" too where there is a GPU)
    bench_models       time_ / peakmem_  the LSTM, GRU and RNN training step at the seed's
                              configuration; time_ one whole small benchmark cell
    bench_compile      track_ seconds of Numba compilation (cold cache) and of loading the
                              compiled kernels from the on-disk cache (warm)
    bench_convergence  track_ steps for LSTM + Adam to solve the adding problem; validation
                              MSE of every optimizer after a fixed step budget

Every figure is one where lower is better, since asv reads any increase as a regression.
No time_ figure includes compilation: each `setup` makes the first call.

Which optbench is measured: in the virtualenvs that `asv run` and `asv continuous` build,
the commit under test, installed there (asv sets ASV_ENV_TYPE in those). An existing
environment (`-E existing:PYTHON`) installs nothing, and its results are saved only under
a commit named with `--set-commit-hash` (this checkout's HEAD), so there this checkout's
package is put first on sys.path: the interpreter may hold another optbench (an editable
install of another checkout, an older wheel) that would be measured under this name.
"""

import os
import sys

if os.environ.get("ASV_ENV_TYPE", "existing") == "existing":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
