"""promptloop.heap: freed C-heap memory goes back to the system (glibc), and nothing breaks
elsewhere."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import pytest

from promptloop import heap


def _resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's; the operator image and CI are glibc",
)
def test_memory_freed_below_the_top_of_the_heap_leaves_the_resident_set() -> None:
    heap.release_free_heap()
    # 8 KiB strings are above CPython's small-object limit (512 B) and below glibc's mmap
    # threshold, so they come from glibc's heap; a survivor after every 32 of them keeps the
    # heap's top from shrinking by itself, as the objects a burst leaves behind do.
    blocks: list[str] = []
    survivors: list[str] = []
    for index in range(16_000):
        blocks.append(f"{index:08d}" + "x" * 8192)
        if index % 32 == 31:
            survivors.append(f"{index:08d}" + "y" * 600)
    grown = _resident_kib()
    del blocks
    kept = _resident_kib()
    assert heap.release_free_heap() is True
    trimmed = _resident_kib()
    # ~128 MiB were freed; without the trim most of it stays resident.
    assert kept - trimmed > 64_000, (grown, kept, trimmed)
    assert len(survivors) == 500


async def test_the_trimming_task_runs_on_its_interval_and_stops_when_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    three_calls = asyncio.Event()
    loop = asyncio.get_running_loop()

    def fake_trim(pad: int) -> int:  # runs in a worker thread, like the real one
        calls.append(pad)
        if len(calls) == 3:
            loop.call_soon_threadsafe(three_calls.set)
        return 1

    monkeypatch.setattr(heap, "_MALLOC_TRIM", fake_trim)
    task = asyncio.create_task(heap.trim_forever(interval=0.01))
    await asyncio.wait_for(three_calls.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls[:3] == [0, 0, 0]


async def test_without_malloc_trim_the_task_ends_and_nothing_is_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap, "_MALLOC_TRIM", None)
    await asyncio.wait_for(heap.trim_forever(interval=0.01), timeout=5)
    assert heap.release_free_heap() is False
