"""The one place that owns the optimizer kernels' tunables.

Changing a value here changes compiled code: the kernel factories capture these values in
their closures, so Numba's on-disk cache keys follow them and nothing stale is loaded.
"""

# Numba fastmath flags for the CPU step kernels: none. Without them the kernels reproduce
# the numpy reference bit for bit (tests assert it), NaN and inf propagate as in torch, and
# they are no slower where it counts: at 2^26 parameters the step is memory-bound, and at
# 2^16 'contract' (FMA) measured within noise. 'nnan'/'ninf' would also let LLVM drop the
# NaN checks that keep a diverging run visible.
CPU_FASTMATH = frozenset()

# Below this many parameters a CPU step runs on the calling thread: waking the worker
# threads costs more than the update itself.
CPU_SERIAL_BELOW = 1 << 14

# Global-norm clipping reduces in fixed chunks of this many elements (float64 partial sums,
# merged exactly), so its result depends neither on thread count nor on scheduling.
NORM_CHUNK = 1 << 16

# CUDA launch shape: threads per block (a power of 2: the norm reduces over a block as a
# tree), and a cap on blocks (a grid-stride loop covers the rest).
CUDA_THREADS_PER_BLOCK = 256
CUDA_MAX_BLOCKS = 1024
