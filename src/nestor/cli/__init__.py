"""The command-line front end: thin, over nestor.service."""

from .main import main

__all__ = ["main"]
