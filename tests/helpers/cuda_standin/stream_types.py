"""`torch.cuda.Stream` and `torch.cuda.Event` standing in (C types, so replaced whole): the same constructors and
methods, their ordering kept by the stand-in's `StreamRules`; an event completes only once the host synchronised (an
infinitely slow GPU), and `elapsed_time` is the host clock between the records."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from helpers.cuda_standin.device import CudaStandin
    from helpers.cuda_standin.streams import StreamState


def make_stream_class(gpu: CudaStandin) -> type:
    class Stream(torch.Stream):
        """`torch.cuda.Stream`, standing in: the same constructor and methods, ordering kept by `CudaStandin`. A
        `torch.Stream` underneath (ids only), so that torch's own argument parsers (``record_stream``) take it."""

        def __new__(
            cls,
            device: Any = None,
            priority: int = 0,
            *,
            stream_id: int | None = None,
            device_index: int | None = None,
            device_type: int | None = None,
        ) -> Stream:
            if stream_id is not None:  # torch.cuda.current_stream's form
                state = gpu.state(device_index, stream_id)
            else:
                from torch.cuda._utils import _get_device_index

                state = gpu.new_stream(gpu._index(_get_device_index(device, optional=True)))
            self = super().__new__(cls, stream_id=state.sid, device_index=state.device, device_type=1)
            self._state, self.priority = state, priority
            return self

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        cuda_stream = property(lambda self: 0x1000 + self._state.sid)

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Stream) and other._state is self._state

        def __hash__(self) -> int:
            return hash((self._state.device, self._state.sid))

        def __repr__(self) -> str:
            return f"<torch.cuda.Stream device=cuda:{self.device_index} cuda_stream={self.cuda_stream:#x} (stand-in)>"

        def wait_stream(self, stream: Stream) -> None:
            if not isinstance(stream, Stream):
                raise TypeError(f"wait_stream expects a torch.cuda.Stream, got {type(stream).__name__}")
            gpu.wait(self._state, gpu.snapshot(stream._state), f"wait_stream({stream._state.label})")

        def wait_event(self, event: Any) -> None:
            event.wait(self)

        def record_event(self, event: Any = None) -> Any:
            event = event if event is not None else torch.cuda.Event()
            event.record(self)
            return event

        def query(self) -> bool:
            return gpu.horizon.get(self._state, -1) >= self._state.seq

        def is_capturing(self) -> bool:
            return False

        def synchronize(self) -> None:
            gpu.host_waited(gpu.snapshot(self._state), f"Stream.synchronize({self._state.label})")

    return Stream


def make_event_class(gpu: CudaStandin) -> type:
    class Event:
        """`torch.cuda.Event`, standing in: records what its stream has done; `query` is False until the host
        synchronised (an infinitely slow GPU); `elapsed_time` is the host clock between the records."""

        def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> None:
            self.enable_timing = bool(enable_timing)
            self._snap: dict | None = None
            self._stream: StreamState | None = None
            self._t = 0.0

        def record(self, stream: Any = None) -> None:
            if stream is None:
                stream = torch.cuda.current_stream()
            s = stream._state
            if self._stream is not None and self._stream.device != s.device:
                raise RuntimeError(
                    f"Event device index {self._stream.device} does not match recording stream's device index "
                    f"{s.device}."
                )
            s.seq += 1
            self._stream, self._snap, self._t = s, gpu.snapshot(s), time.perf_counter()

        def wait(self, stream: Any = None) -> None:
            if stream is None:
                stream = torch.cuda.current_stream()
            if self._snap is not None:
                gpu.wait(stream._state, self._snap, f"Event.wait({self._stream.label})")

        def _done(self) -> bool:
            return self._snap is None or gpu.horizon.get(self._stream, -1) >= self._snap[self._stream]

        def query(self) -> bool:
            return self._done()

        def synchronize(self) -> None:
            if self._snap is not None:
                gpu.host_waited(self._snap, f"Event.synchronize({self._stream.label})")

        def elapsed_time(self, end: Event) -> float:
            if not (self.enable_timing and end.enable_timing):
                raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
            if self._snap is None or end._snap is None:
                raise ValueError("Both events must be recorded before calculating elapsed time.")
            if gpu.loop_depth:
                gpu.violation("Event.elapsed_time inside a batch loop: it needs both events complete (a host sync)")
            if not (self._done() and end._done()):
                raise RuntimeError("CUDA error: device not ready")
            return (end._t - self._t) * 1000.0

    return Event
