"""One start/stop/with-block protocol for every server the project runs."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """Subclasses provide start() and stop(); `with` then starts and always stops."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
