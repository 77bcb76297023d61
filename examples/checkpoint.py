"""The demo's checkpoints are the library's: ``namax.checkpoint`` (atomic, checksummed,
verified on load, with fallback to the newest usable file). Kept so that ``import checkpoint``
from the examples folder still works; new code should ``from namax import checkpoint``."""

from namax.checkpoint import *  # noqa: F401,F403
from namax.checkpoint import __all__  # noqa: F401
