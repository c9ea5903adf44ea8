"""Inference speed: frames per second, measured honestly on asynchronous devices.

CUDA kernels run after the Python call returns, so a wall clock read without a
synchronisation measures how fast work was queued, not done. :class:`FrameTimer`
synchronises the device at both ends of the timed block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import torch


def fps(frames: int, seconds: float) -> float:
    """Frames (images, slices, video frames) processed per second.

    Raises:
        ValueError: ``seconds`` is not positive or ``frames`` is negative.
    """
    if seconds <= 0 or frames < 0:
        raise ValueError(f"need frames >= 0 and seconds > 0, got frames={frames}, seconds={seconds}")
    return frames / seconds


class FrameTimer:
    """Times a block and counts the frames done in it.

    Example::

        with FrameTimer(device="cuda") as timer:
            for batch in loader:
                model(batch)
                timer.count(len(batch))
        print(timer.fps)

    Args:
        device: the device the work runs on; CUDA is synchronised before and after.
        clock: seconds as a float; ``time.perf_counter`` unless a test needs a fake one.
    """

    def __init__(
        self, device: torch.device | str | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.device = torch.device(device) if device is not None else None
        self.clock = clock
        self.frames = 0
        self.seconds: float | None = None
        self._start = 0.0

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def count(self, frames: int = 1) -> None:
        """Add ``frames`` to the number processed inside the block."""
        self.frames += int(frames)

    def __enter__(self) -> FrameTimer:
        self._sync()
        self._start = self.clock()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sync()
        self.seconds = self.clock() - self._start

    @property
    def fps(self) -> float:
        """Frames per second of the finished block."""
        if self.seconds is None:
            raise RuntimeError("FrameTimer.fps is read after the `with` block ends")
        return fps(self.frames, self.seconds)
