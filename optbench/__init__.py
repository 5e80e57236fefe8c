"""optbench: which optimizer trains a recurrent network across a long time lag, how fast, and why."""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name):
    # `optbench.load(DIR)` without importing pandas and sqlite at `import optbench`.
    if name == "load":
        from optbench.store import load

        return load
    raise AttributeError(f"module 'optbench' has no attribute {name!r}")
