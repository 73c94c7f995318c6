"""Progress reporting for folder uploads: tqdm when installed, else a plain text bar."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol, TextIO

ProgressCallback = Callable[[int, int], None]
"""`callback(done, total)` after each batch."""


class Progress(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _Callback:
    def __init__(self, callback: ProgressCallback, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def update(self, n: int) -> None:
        self.done += n
        self.callback(self.done, self.total)

    def close(self) -> None:
        pass


class TextBar:
    """`identify  12/40 [#####.............]` redrawn in place on a terminal (stderr)."""

    def __init__(self, total: int, desc: str, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.desc, self.stream, self.width, self.done = total, desc, stream, width, 0
        self._draw()

    def update(self, n: int) -> None:
        self.done += n
        self._draw()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self) -> None:
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.desc} {self.done}/{self.total} files [{bar}]")
        self.stream.flush()


def make_progress(progress: bool | ProgressCallback, total: int, desc: str) -> Progress:
    """A progress sink for `total` files: off, a callback, tqdm, or the text bar."""
    if callable(progress):
        return _Callback(progress, total)
    if not progress:
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:
        return TextBar(total, desc)
    bar: Any = tqdm(total=total, desc=desc, unit="file", file=sys.stderr)
    return bar  # tqdm has update(n) and close()
