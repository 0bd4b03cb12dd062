"""dmd: the DM control-plane daemon."""

__version__ = "0.1.0"
