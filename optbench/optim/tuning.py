"""The one place that owns the optimizer kernels' tunables.

Changing a value here changes compiled code: the kernel factories capture these values in
their closures, so Numba's on-disk cache keys follow them and nothing stale is loaded.
"""

# Numba fastmath flags for the CPU step kernels: none. Without them the kernels reproduce
# the numpy reference bit for bit (tests assert it), NaN and inf propagate as in torch, and
# they lose little: at 2^26 parameters the step is memory-bound, and at 2^16 'contract'
# (FMA) saves a rounding, not a load. 'nnan'/'ninf' would also let LLVM drop the
# NaN checks that keep a diverging run visible.
CPU_FASTMATH = frozenset()

# Below this many parameters a CPU step runs on the calling thread: waking the worker
# threads costs more than the update itself. The batched step compares K * P with it.
CPU_SERIAL_BELOW = 1 << 14

# The batched CPU step hands threads chunks of at most this many elements of one model's
# row, so any K (one model included) spreads over every thread, and each chunk is one
# plain loop with that model's scalars, which LLVM vectorizes as it does the 1-D step.
# 2^14 float32 elements: 64 KiB per array, a few hundred KiB per chunk for the widest
# state, small against the 2 x 8 x 67k (seed LSTM) work of K = 8 on a 16-core machine.
CPU_BATCH_CHUNK = 1 << 14

# Global-norm clipping reduces in fixed chunks of this many elements (float64 partial sums,
# merged exactly), so its result depends neither on thread count nor on scheduling.
NORM_CHUNK = 1 << 16

# CUDA launch shape: threads per block (a power of 2: the norm reduces over a block as a
# tree), and a cap on blocks. The step kernels launch CUDA_WAVES full waves instead: the SM
# count times the blocks of that kernel that fit on one SM (the occupancy API, asked once
# per kernel), or fewer when the work is smaller. One wave: every block starts at once and
# strides over its share, so no SM idles while a last partial wave runs (a fixed 1024 blocks
# of 256 threads leaves part of a wave on an H200's 132 SMs x 8 blocks). CUDA_MAX_BLOCKS is
# the step kernels' grid only where there is no occupancy to ask (the simulator). The
# clipping kernels always use CUDA_MAX_BLOCKS: their norm sums per block, so a grid fixed
# by n keeps it deterministic.
CUDA_THREADS_PER_BLOCK = 256
CUDA_WAVES = 1
CUDA_MAX_BLOCKS = 1024

# Elements each thread of a CUDA step kernel has in flight: it loads this many elements of
# p, g and every slot (one grid stride apart, so each warp load stays coalesced), updates
# them, then stores them. Element by element, aliasing (p, g and the slots are separate
# pointers NVVM cannot prove distinct) keeps each element's loads behind the previous
# element's stores, so a thread has 16 bytes of Adam in flight; bandwidth needs about
# latency x bandwidth in flight (~700 ns x 4.8 TB/s ~ 3.4 MB on an H200, ~25 KiB per SM),
# which full occupancy (2048 threads x 16 B = 32 KiB per SM) barely gives. With 4 elements
# a thread has 64 bytes in flight: Adam's step compiles (ptxas, sm_90) to 38 registers,
# 6 blocks of 256 per SM, 96 KiB per SM; 8 elements take 145 registers (1 block per SM).
# Chosen by this reasoning and the ptxas figures; tools/gpu_check.py sweeps threads per
# block and elements per thread on a GPU to check the choice.
CUDA_ELEMENTS_PER_THREAD = 4
