"""Exceptions raised by the spectrum core.

Every reader error names the source (file name, or zip member) and, where it applies, the
1-based line, so that a user can open the file and see the problem.
"""

from __future__ import annotations


class SpectrumError(ValueError):
    """A spectrum (or a file holding one) cannot be used."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.source = source
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source or "<input>"
        if self.line is not None:
            where = f"{where}, line {self.line}"
        return f"{where}: {self.message}"


class ParseError(SpectrumError):
    """The bytes of a file are not a spectrum in the format they claim to be."""


class UnsupportedFormatError(ParseError):
    """No reader recognises the content of a file."""
