"""nestor: a virtualization host for Linux built around nested virtualization."""

from .errors import NestorError

__all__ = ["NestorError", "__version__"]
__version__ = "0.1.0"

# No `logging` here: `nestor vm start` through the warm daemon (warm_start.py) imports only what it
# needs. Every module that logs gives its own logger a NullHandler (the library convention).
