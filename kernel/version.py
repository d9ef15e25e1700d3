"""The version of Nubis and of its ABI."""

__version__ = "0.1.0"
ABI = "nubis.v1"
