"""How many earlier results of a builder are still in memory each time it is called: for
the tests that exporters hold one part (SR, SEG) at a time."""

from __future__ import annotations

import gc
import weakref
from types import ModuleType
from typing import Any

import pytest


class BuildTracker:
    """Wraps ``module.name`` (a builder returning one object per call) so that each call
    first counts how many objects returned by earlier calls are still alive (after a full
    garbage collection): :attr:`alive_at_build`, one count per call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> None:
        self.alive_at_build: list[int] = []
        self._built: list[weakref.ref[Any]] = []
        build = getattr(module, name)

        def tracked(*args: Any, **kwargs: Any) -> Any:
            gc.collect()
            self.alive_at_build.append(sum(ref() is not None for ref in self._built))
            out = build(*args, **kwargs)
            self._built.append(weakref.ref(out))
            return out

        monkeypatch.setattr(module, name, tracked)

    def clear(self) -> None:
        """Forget the calls so far."""
        self.alive_at_build.clear()
        self._built.clear()
