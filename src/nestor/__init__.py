"""nestor: a virtualization host for Linux built around nested virtualization."""

import logging

from .errors import NestorError

__all__ = ["NestorError", "__version__"]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
