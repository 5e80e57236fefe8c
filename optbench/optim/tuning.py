"""The one place that owns the optimizer kernels' tunables.

Changing a value here changes compiled code: the kernel factories capture these values in
their closures, so Numba's on-disk cache keys follow them and nothing stale is loaded.
"""

# Numba fastmath flags for the CPU step kernels. 'contract' lets LLVM fuse a*b + c into one
# FMA (one rounding instead of two); nothing here assumes away NaN or inf ('nnan'/'ninf'),
# so a diverging run still shows NaN in its parameters, and no reciprocal or sqrt is
# approximated ('arcp'/'afn'), so results stay within an ulp or so of the numpy reference.
CPU_FASTMATH = frozenset()

# Below this many parameters a CPU step runs on the calling thread: waking the worker
# threads costs more than the update itself.
CPU_SERIAL_BELOW = 1 << 14

# Global-norm clipping reduces in fixed chunks of this many elements (float64 partial sums,
# merged serially), so its result depends neither on thread count nor on scheduling.
NORM_CHUNK = 1 << 16

# CUDA launch shape: threads per block, and a cap on blocks (a grid-stride loop covers the rest).
CUDA_THREADS_PER_BLOCK = 256
CUDA_MAX_BLOCKS = 1024
