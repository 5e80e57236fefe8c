import os

# Without a GPU, run the CUDA kernels under Numba's simulator so no test is skipped.
# This must happen before numba.cuda is first imported.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
