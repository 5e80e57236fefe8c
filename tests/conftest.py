import os

# Without a GPU, run the CUDA kernels under Numba's simulator so no test is skipped.
# This must happen before numba.cuda is first imported.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


def pytest_collection_modifyitems(config, items):
    """OPTBENCH_TEST_ORDER=reverse runs the tests last to first (CI's second pass): a test
    that passes only after another one set something up, or fails only after another one
    left something behind (a thread count, an environment variable, a cache), shows up."""
    if os.environ.get("OPTBENCH_TEST_ORDER") == "reverse":
        items.reverse()
