"""optbench: which optimizer trains a recurrent network across a long time lag, how fast, and why."""

__version__ = "0.1.0"

__all__ = ["__version__"]
