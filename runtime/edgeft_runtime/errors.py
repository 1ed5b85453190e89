"""The error every edgeft and edgeft-runtime command prints as ``error: ...`` with its fix, and exits on."""
from __future__ import annotations


class EdgeftError(Exception):
    """Base class. ``fix`` is the next thing the user should do; it is printed under the message."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class BundleError(EdgeftError):
    """A bundle is damaged, tampered with, unsigned where a signature is required, or not a bundle."""
