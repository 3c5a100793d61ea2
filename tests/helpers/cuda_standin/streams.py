"""The CUDA stand-in's bookkeeping of streams and allocations, and the rules it enforces with them: a GPU tensor
remembers the stream that wrote it, a use on another stream must be ordered after that write (an event wait or
`wait_stream`), a block freed on its own stream while another stream may still read it is an error unless
`record_stream` was called, and every host synchronisation is kept (an error inside a batch loop).

`StreamRules` is the part of `CudaStandin` (`device`) that holds this state; the stand-in's `torch.cuda.Stream` and
`Event` (`stream_types`) and its tensor mode (`tensor_mode`) report to it.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field

import torch


class StandinViolation(AssertionError):
    """Code that breaks one of CUDA's rules, run under the stand-in (on a GPU: a crash, a stall or wrong numbers)."""


@dataclass(eq=False)
class StreamState:
    device: int
    sid: int
    seq: int = 0  # work items enqueued so far
    waited: dict = field(default_factory=dict)  # other stream -> the seq of it this stream is ordered after
    freed_pending: int = 0  # blocks freed here whose queued reads on this stream the host has not seen complete

    @property
    def label(self) -> str:
        return f"cuda:{self.device}/stream{self.sid}"


@dataclass(eq=False)
class Block:
    """One storage (an allocation of the caching allocator), by its data pointer."""

    alloc: StreamState
    uses: dict = field(default_factory=dict)  # stream -> seq of its last use
    recorded: set = field(default_factory=set)  # streams given to record_stream
    refs: int = 0


def dev_of(t: torch.Tensor) -> torch.device | None:
    """The stand-in GPU a tensor lives on (None: a host tensor)."""
    return getattr(t, "_hg_dev", None)


class StreamRules:
    """Streams, their ordering and the host's waits, the allocations and the pinned host memory of `device_count`
    stand-in GPUs; a rule broken is a `StandinViolation`, kept in `violations` too."""

    def __init__(self, device_count: int) -> None:
        self.violations: list[str] = []
        self.waits: list[tuple[str, str, str]] = []  # (waiter, what, on): what waits on what, in order
        self.host_syncs: list[str] = []  # every host synchronisation with the device, in order
        self.loop_depth = 0
        self._sids = itertools.count(1)
        self._default = {i: StreamState(i, 0) for i in range(device_count)}
        self._current_stream = dict(self._default)
        self._streams: dict[tuple[int, int], StreamState] = {(i, 0): s for i, s in self._default.items()}
        self._blocks: dict[int, Block] = {}
        self._pinned: dict[int, int] = {}  # storage data_ptr -> live pinned storages at it
        self.peak_bytes = {i: 0 for i in range(device_count)}
        self.live_bytes = {i: 0 for i in range(device_count)}
        self.horizon: dict = {}  # stream -> the seq of it the host has seen complete

    # ------------------------------------------------------------------------------------------------------------
    # Streams and the host's waits
    # ------------------------------------------------------------------------------------------------------------

    def stream_of(self, device: int) -> StreamState:
        return self._current_stream[device]

    def new_stream(self, device: int) -> StreamState:
        s = StreamState(device, next(self._sids))
        self._streams[(device, s.sid)] = s
        return s

    def state(self, device_index: int, stream_id: int) -> StreamState:
        return self._streams[(device_index, stream_id)]

    def snapshot(self, s: StreamState) -> dict:
        """What a point on `s` is ordered after: `s` up to now and everything it waited for."""
        return {**s.waited, s: s.seq}

    def wait(self, waiter: StreamState, snap: dict, what: str) -> None:
        for other, seq in snap.items():
            if other is not waiter and waiter.waited.get(other, -1) < seq:
                waiter.waited[other] = seq
        on = ",".join(sorted(o.label for o in snap if o is not waiter))
        self.waits.append((waiter.label, what, on))

    def host_waited(self, snap: dict, what: str, *, by_library: bool = False) -> None:
        """The host saw the work in `snap` complete: every stream's later work is ordered after it. `by_library`: a
        synchronisation inside a library's call that hgbench cannot avoid (torchvision's nvjpeg decode), recorded but
        not an error in a batch loop."""
        self.host_syncs.append(what)
        if self.loop_depth and not what.startswith("query") and not by_library:
            self.violation(f"{what} inside a batch loop: the host waits for the GPU every batch")
        for s in self._streams.values():
            for other, seq in snap.items():
                if other is not s and s.waited.get(other, -1) < seq:
                    s.waited[other] = seq
        for other, seq in snap.items():
            self.horizon[other] = max(self.horizon.get(other, -1), seq)
            other.freed_pending = 0

    def _synchronize_device(self, i: int) -> None:
        streams = [s for s in self._streams.values() if s.device == i]
        self.host_waited({s: s.seq for s in streams}, f"torch.cuda.synchronize(cuda:{i})")

    def violation(self, message: str) -> None:
        self.violations.append(message)
        raise StandinViolation(message)

    # ------------------------------------------------------------------------------------------------------------
    # Tensors
    # ------------------------------------------------------------------------------------------------------------

    def tag(self, t: torch.Tensor, dev: torch.device, stream: StreamState, *, written: bool = True) -> None:
        """`t` lives on `dev`; if `written`, `stream` just produced it."""
        new = getattr(t, "_hg_dev", None) is None
        t._hg_dev = dev
        if written or new:
            stream.seq += 1
            t._hg_stream, t._hg_seq = stream, stream.seq
        if new:
            self._track(t, stream)

    def _track(self, t: torch.Tensor, stream: StreamState) -> None:
        try:
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):
            return
        if not ptr or not nbytes:
            return
        block = self._blocks.get(ptr)
        if block is None:
            block = self._blocks[ptr] = Block(stream)
            d = stream.device
            self.live_bytes[d] += nbytes
            self.peak_bytes[d] = max(self.peak_bytes[d], self.live_bytes[d])
            block.nbytes = nbytes
        block.refs += 1
        t._hg_block = block
        weakref.finalize(t, self._release, ptr, block)

    def _release(self, ptr: int, block: Block) -> None:
        block.refs -= 1
        if block.refs or self._blocks.get(ptr) is not block:
            return
        del self._blocks[ptr]
        a = block.alloc
        self.live_bytes[a.device] -= block.nbytes
        for s, seq in block.uses.items():
            if s is a or s in block.recorded or max(a.waited.get(s, -1), self.horizon.get(s, -1)) >= seq:
                continue
            # Not raised: a finaliser cannot raise into the code that dropped the tensor. The fixture fails the test.
            self.violations.append(
                f"a block allocated on {a.label} was freed there while {s.label} may still read it: the allocator "
                f"hands it out again at once (call record_stream({s.label}) or make {a.label} wait)"
            )
        if a in block.uses:
            a.freed_pending += 1

    def use(self, t: torch.Tensor, stream: StreamState, what: str) -> None:
        """`t` is read or written by work on `stream`: it must be ordered after the work that produced it."""
        producer = getattr(t, "_hg_stream", None)
        if producer is None:
            return
        if producer is not stream and max(stream.waited.get(producer, -1), self.horizon.get(producer, -1)) < t._hg_seq:
            self.violation(
                f"{what} on {stream.label} uses a tensor {tuple(t.shape)} produced on {producer.label} without "
                "waiting for it (an event wait or wait_stream): it may read the memory before it is written"
            )
        block = getattr(t, "_hg_block", None)
        if block is not None:
            block.uses[stream] = stream.seq + 1

    def record_stream(self, t: torch.Tensor, stream: StreamState) -> None:
        block = getattr(t, "_hg_block", None)
        if block is not None:
            block.recorded.add(stream)

    def pin(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if not ptr:
            return
        self._pinned[ptr] = self._pinned.get(ptr, 0) + 1
        weakref.finalize(t, self._unpin, ptr)

    def _unpin(self, ptr: int) -> None:
        n = self._pinned.get(ptr, 0) - 1
        if n > 0:
            self._pinned[ptr] = n
        else:
            self._pinned.pop(ptr, None)

    def is_pinned(self, t: torch.Tensor) -> bool:
        if getattr(t, "_hg_dev", None) is not None:
            return False
        try:
            return t.untyped_storage().data_ptr() in self._pinned
        except (RuntimeError, NotImplementedError):
            return False

    def host_read(self, t: torch.Tensor, what: str) -> None:
        """The host reads a GPU value: it waits for the stream that produced it (and the current one)."""
        if self.loop_depth:
            self.violation(f"{what} of a GPU tensor {tuple(t.shape)} inside a batch loop: a host sync every batch")
        stream = self.stream_of(t._hg_dev.index)
        self.use(t, stream, what)
        self.host_waited(self.snapshot(stream), what)
