"""A CUDA stand-in for machines without a GPU: the real `hgbench run --device cuda` pipeline on the CPU, under CUDA's
rules.

Every line of hgbench that only runs on CUDA must run in `make test` on a CPU, so that a defect there fails a test the
moment it is written. `CudaStandin.install` makes the process look like one with `device_count` GPUs:

- **torch.cuda's own Python code runs**, with only the C bindings under it (``torch._C._cuda_*``) answered by the
  stand-in: ``set_device(torch.device("cuda"))`` raises exactly as on a GPU, because torch's `_get_device_index`
  does. Only what has no Python layer is replaced whole: `torch.cuda.Stream` and `torch.cuda.Event` (C types), the
  device properties, and torchvision's nvjpeg decode (a CUDA kernel).
- **Tensors on "cuda:N" are CPU tensors that say they are on cuda:N** (a `TorchFunctionMode` tags each one and
  answers ``.device``/``.is_cuda`` for it), so the run really computes and trains and its numbers are real (CPU)
  numbers. An op that mixes devices fails as on a GPU: two GPUs, or a GPU tensor and a host tensor of one or more
  dimensions (a host 0-d tensor is a scalar and allowed, as CUDA allows it). With ``torch.autocast("cuda")`` on, the
  ops run under the CPU's autocast of the same dtype.
- **Host reads and uploads**: a read of a GPU value on the host (``item``, ``float``, ``bool``, ``tolist``, ``cpu``,
  a copy to host memory that is not ``non_blocking`` into pinned memory, a boolean-mask index) and a synchronous
  upload are errors inside a batch loop (any `StepTimer.iter_data` loop, between its first batch and its end), and
  ``torch.cuda.synchronize``, ``Event.synchronize``/``elapsed_time`` too. A ``non_blocking`` upload from pageable
  memory is an error anywhere (it is silently synchronous on a GPU). ``pin_memory`` is tracked per storage. Every
  host synchronisation, in a loop or not, is kept in ``host_syncs`` (a boolean-mask index and
  ``torch.tensor(data, device="cuda")`` included), so a test can count them per step.
- **Autograd**: the ``backward`` of a Python `torch.autograd.Function` runs under the stand-in too (the engine would
  run it outside the tensor mode), and `nn.SyncBatchNorm`'s CUDA-only kernels run on the CPU (`standin_kernels`).
- **Streams**: every GPU tensor remembers the stream that produced it; using it on another stream without an event
  wait or ``wait_stream`` since is an error, and so is freeing a block on its own stream while another stream used it,
  unless ``record_stream`` was called or the freeing stream waited. The GPU is taken to be infinitely slow (an
  event's ``query`` is False until the host synchronised): the most adversarial legal schedule. torchvision's CUDA
  JPEG decoder is modelled as it is (pytorch/vision PR 9606): it allocates its outputs on the current stream and
  writes them from a stream of its own that does not wait for the current one, so decoding while the current stream
  has freed blocks that its queued work may still read is an error. Like torchvision, it synchronises its own stream
  before and after decoding: the host is blocked for the decode (recorded, not an error: hgbench cannot avoid it).
- ``torch.compile`` runs the model eagerly, but its first call with a GPU tensor builds a C extension through
  Triton's own build code, as Triton builds its launcher on a GPU: a host without a C compiler or ``Python.h`` fails
  there as it would with a GPU.
- NVML answers through `helpers.fake_nvml` with the device's PCI bus id; the device's name says it is a stand-in, so
  its records (machine id ``...-cuda-stand-in...``) can never be pooled with a measurement.

`StandinViolation` is raised where the rule is broken and also kept in `violations` (a caller may catch broad errors):
the fixture fails the test on any violation at teardown.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from helpers.standin_kernels import KERNELS

STANDIN_GPU_NAME = "NVIDIA H100 80GB HBM3 (hgbench CUDA stand-in, not a GPU)"
_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__")
_NUMPY = ("numpy", "__array__")
_METADATA = ("_has_compatible_shallow_copy_type", "is_same_size", "is_set_to")  # compare tensors, compute nothing
_INDEX_OK = ("__getitem__", "__setitem__", "index_put_", "index_put", "index_select")  # CPU indices are allowed


class StandinViolation(AssertionError):
    """Code that breaks one of CUDA's rules, run under the stand-in (on a GPU: a crash, a stall or wrong numbers)."""


@dataclass(eq=False)
class _StreamState:
    device: int
    sid: int
    seq: int = 0  # work items enqueued so far
    waited: dict = field(default_factory=dict)  # other stream -> the seq of it this stream is ordered after
    freed_pending: int = 0  # blocks freed here whose queued reads on this stream the host has not seen complete

    @property
    def label(self) -> str:
        return f"cuda:{self.device}/stream{self.sid}"


@dataclass(eq=False)
class _Block:
    """One storage (an allocation of the caching allocator), by its data pointer."""

    alloc: _StreamState
    uses: dict = field(default_factory=dict)  # stream -> seq of its last use
    recorded: set = field(default_factory=set)  # streams given to record_stream
    refs: int = 0


class CudaStandin:
    """Stands in for `device_count` CUDA GPUs; `install` it for one test (everything is undone by `monkeypatch`)."""

    def __init__(self, device_count: int = 1) -> None:
        self.count = device_count
        self.current = 0
        self.violations: list[str] = []
        self.waits: list[tuple[str, str, str]] = []  # (waiter, what, on): what waits on what, in order
        self.host_syncs: list[str] = []  # every host synchronisation with the device, in order
        self.decodes = 0  # batches the nvjpeg stand-in decoded
        self.decoder_syncs = 0  # decodes after which the host waited for the decoder's stream (torchvision's own sync)
        self.loop_depth = 0
        self.capability = (9, 0)  # an H100's; (7, 0), a V100's, has no native bf16
        self.autocast_ops = 0  # ops run under torch.autocast("cuda") (as the CPU's autocast of the same dtype)
        self._sids = itertools.count(1)
        self._default = {i: _StreamState(i, 0) for i in range(device_count)}
        self._current_stream = dict(self._default)
        self._streams: dict[tuple[int, int], _StreamState] = {(i, 0): s for i, s in self._default.items()}
        self._blocks: dict[int, _Block] = {}
        self._pinned: dict[int, int] = {}  # storage data_ptr -> live pinned storages at it
        self._decoder = {}  # device -> the decoder's private stream
        self.peak_bytes = {i: 0 for i in range(device_count)}
        self.live_bytes = {i: 0 for i in range(device_count)}
        self.horizon: dict = {}  # stream -> the seq of it the host has seen complete

    # ------------------------------------------------------------------------------------------------------------
    # Installing
    # ------------------------------------------------------------------------------------------------------------

    def install(self, monkeypatch: pytest.MonkeyPatch) -> CudaStandin:
        """Answer torch.cuda's C layer, replace its C types, and enter the tensor mode until the test ends."""
        import torchvision.io.image  # noqa: F401 - registers torch.ops.image before the mode looks ops up

        C, cuda = torch._C, torch.cuda
        monkeypatch.setattr(cuda, "_initialized", False)
        monkeypatch.setattr(cuda, "_queued_calls", [])
        monkeypatch.setattr(cuda, "default_generators", ())
        monkeypatch.setattr(cuda, "_cached_device_count", None, raising=False)
        monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "0")
        stubs = {
            "_cuda_getDeviceCount": lambda: self.count,
            "_cuda_init": lambda: self._init(monkeypatch),
            "_cuda_setDevice": self._set_device,
            "_cuda_getDevice": lambda: self.current,
            "_cuda_exchangeDevice": self._exchange_device,
            "_cuda_maybeExchangeDevice": self._exchange_device,
            "_cuda_synchronize": lambda: self._synchronize_device(self.current),
            "_cuda_getCurrentStream": self._get_current_stream,
            "_cuda_getDefaultStream": lambda i: (0, self._index(i), 1),
            "_cuda_setStream": self._set_stream,
            "_cuda_memoryStats": self._memory_stats,
            "_cuda_resetPeakMemoryStats": self._reset_peak,
            "_cuda_emptyCache": lambda: None,
            "_cuda_set_sync_debug_mode": self._set_sync_debug_mode,
            "_cuda_get_sync_debug_mode": lambda: self.sync_debug_mode,
            # torch.accelerator's C layer (the optimisers ask it whether a CUDA graph is being captured)
            "_accelerator_getDeviceIndex": lambda: self.current,
            "_accelerator_setDeviceIndex": self._set_device,
            "_accelerator_exchangeDevice": self._exchange_device,
            "_accelerator_maybeExchangeDevice": self._exchange_device,
            "_accelerator_getStream": lambda i: torch.cuda.current_stream(i),
            "_accelerator_synchronizeDevice": lambda i: self._synchronize_device(self._index(i)),
        }
        self.sync_debug_mode = 0
        for name, fn in stubs.items():
            monkeypatch.setattr(C, name, fn, raising=False)
        # bound from torch._C when torch.cuda was imported
        # (a CUDA build of torch binds the real one, which asks the driver; the stand-in never captures a graph)
        monkeypatch.setattr(torch.cuda.graphs, "_cuda_isCurrentStreamCapturing", lambda: False)
        monkeypatch.setattr(cuda, "_exchange_device", self._exchange_device)
        monkeypatch.setattr(cuda, "_maybe_exchange_device", self._exchange_device)
        monkeypatch.setattr(cuda, "_get_device_properties", self._properties, raising=False)
        monkeypatch.setattr(cuda, "Stream", _make_stream_class(self))
        monkeypatch.setattr(cuda, "Event", _make_event_class(self))
        monkeypatch.setattr(torch, "compile", self._compile)
        # Set by a CUDA run (cuDNN autotuning): restored after the test like everything else.
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
        self._spy_batch_loops(monkeypatch)
        self._enter_autograd_backwards(monkeypatch)
        _clear_device_caches()
        mode = _Mode(self)
        mode.__enter__()
        self._mode = mode
        return self

    def uninstall(self) -> None:
        """Leave the tensor mode (the fixture calls it before `monkeypatch` undoes the rest)."""
        self._mode.__exit__(None, None, None)
        _clear_device_caches()

    def _init(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # What _cuda_init leaves behind on a GPU: one default generator per device (CPU ones: tensors live there).
        gens = tuple(torch.Generator().manual_seed(torch.initial_seed()) for _ in range(self.count))
        monkeypatch.setattr(torch.cuda, "default_generators", gens)

    def _enter_autograd_backwards(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Run the ``backward`` of every Python `torch.autograd.Function` under the stand-in too.

        The autograd engine runs a Function's backward without the thread's torch-function modes, so without this
        the stand-in would not see it at all (nn.SyncBatchNorm's CUDA kernels, a host read in a custom backward).
        The gradients arriving there were made by the engine, untagged: they live where the forward's output did.
        """
        from torch.autograd import function as autograd_function

        forward_apply = autograd_function.Function.__dict__["apply"]  # a C class method
        backward_apply = autograd_function.BackwardCFunction.apply
        gpu = self

        def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
            out = forward_apply.__get__(None, cls)(*args, **kwargs)
            flat, _ = tree_flatten(out)
            dev = next((dev_of(t) for t in flat if isinstance(t, torch.Tensor) and dev_of(t) is not None), None)
            node = next((t.grad_fn for t in flat if isinstance(t, torch.Tensor) and t.grad_fn is not None), None)
            if dev is not None and node is not None:
                node._hg_dev = dev
            return out

        def backward(node: Any, *grads: Any) -> Any:
            dev = getattr(node, "_hg_dev", None)
            if dev is None or torch._C._len_torch_function_stack():
                return backward_apply(node, *grads)
            for g in grads:
                if isinstance(g, torch.Tensor) and dev_of(g) is None:
                    gpu.tag(g, dev, gpu.stream_of(dev.index))
            with gpu._mode:
                return backward_apply(node, *grads)

        monkeypatch.setattr(autograd_function.Function, "apply", classmethod(apply))
        monkeypatch.setattr(autograd_function.BackwardCFunction, "apply", backward)

    def _spy_batch_loops(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every timed batch loop of hgbench goes through `StepTimer.iter_data`: the loop is inside it."""
        from hgbench.measure import timing

        original = timing.StepTimer.iter_data
        gpu = self

        def iter_data(timer: Any, iterable: Any) -> Iterator[Any]:
            inner = original(timer, iterable)
            gpu.loop_depth += 1
            try:
                yield from inner
            finally:
                gpu.loop_depth -= 1

        monkeypatch.setattr(timing.StepTimer, "iter_data", iter_data)

    # ------------------------------------------------------------------------------------------------------------
    # Devices, streams, events
    # ------------------------------------------------------------------------------------------------------------

    def _index(self, i: int) -> int:
        i = self.current if i is None or i < 0 else int(i)
        if not 0 <= i < self.count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        return i

    def _set_device(self, i: int) -> None:
        torch.cuda._lazy_init()  # as torch's C binding does: setting a device initialises CUDA
        self.current = self._index(i)

    def _exchange_device(self, i: int) -> int:
        previous = self.current
        if i >= 0:
            self.current = self._index(i)
        return previous

    def resolve(self, device: Any) -> torch.device:
        """A device argument as a full device: ``cuda`` is ``cuda:<current>`` (what CUDA's allocator does)."""
        dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
        if dev.type != "cuda":
            return dev
        return torch.device("cuda", self._index(dev.index))

    def stream_of(self, device: int) -> _StreamState:
        return self._current_stream[device]

    def _get_current_stream(self, i: int) -> tuple[int, int, int]:
        s = self._current_stream[self._index(i)]
        return (s.sid, s.device, 1)

    def _set_stream(self, stream_id: int, device_index: int, device_type: int) -> None:
        self._current_stream[self._index(device_index)] = self._streams[(self._index(device_index), stream_id)]

    def new_stream(self, device: int) -> _StreamState:
        s = _StreamState(device, next(self._sids))
        self._streams[(device, s.sid)] = s
        return s

    def state(self, device_index: int, stream_id: int) -> _StreamState:
        return self._streams[(device_index, stream_id)]

    def snapshot(self, s: _StreamState) -> dict:
        """What a point on `s` is ordered after: `s` up to now and everything it waited for."""
        return {**s.waited, s: s.seq}

    def wait(self, waiter: _StreamState, snap: dict, what: str) -> None:
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

    def _set_sync_debug_mode(self, mode: int) -> None:
        self.sync_debug_mode = int(mode)

    def violation(self, message: str) -> None:
        self.violations.append(message)
        raise StandinViolation(message)

    # ------------------------------------------------------------------------------------------------------------
    # Device facts
    # ------------------------------------------------------------------------------------------------------------

    def _properties(self, i: int) -> types.SimpleNamespace:
        """What `_CudaDeviceProperties` holds for an H100 SXM (units as torch gives them: bytes, KiB-free counts)."""
        i = self._index(i)
        return types.SimpleNamespace(
            name=STANDIN_GPU_NAME,
            major=self.capability[0],
            minor=self.capability[1],
            total_memory=85_031_714_816,
            multi_processor_count=132,
            L2_cache_size=52_428_800,
            is_integrated=False,
            is_multi_gpu_board=False,
            max_threads_per_multi_processor=2048,
            warp_size=32,
            uuid=f"00000000-0000-0000-0000-00000000000{i}",
            pci_bus_id=0x18 + i,
            pci_device_id=0,
            pci_domain_id=0,
            gcnArchName="NULL",
        )

    def pci_bus_id(self, i: int) -> str:
        p = self._properties(i)
        return f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"

    def _memory_stats(self, i: int) -> dict:
        i = self._index(i)
        return {"allocated_bytes": {"all": {"current": self.live_bytes[i], "peak": self.peak_bytes[i]}}}

    def _reset_peak(self, i: int) -> None:
        i = self._index(i)
        self.peak_bytes[i] = self.live_bytes[i]

    def _compile(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        """torch.compile's signature, checked; the model runs eagerly (inductor would emit Triton kernels for a GPU
        that is not there, and compilation is not what the stand-in tests). What compiling for a GPU asks of the host
        is kept: the first call with a GPU tensor builds Triton's launcher (`build_triton_launcher`), so a machine
        without a C compiler or Python.h fails there, as it would with a GPU."""
        import inspect

        inspect.signature(_REAL_COMPILE).bind(model, *args, **kwargs)
        if model is None:
            return lambda m: self._compile(m, *args, **kwargs)
        built = False

        def first_call(inputs: Any) -> None:
            nonlocal built
            if not built and any(dev_of(t) is not None for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)):
                build_triton_launcher()
                built = True

        if isinstance(model, torch.nn.Module):  # the module itself, as before; a pre-hook stands for the first call
            model.register_forward_pre_hook(lambda module, inputs: first_call(inputs))
            return model

        @functools.wraps(model)
        def compiled(*a: Any, **k: Any) -> Any:
            first_call((a, k))
            return model(*a, **k)

        return compiled

    # ------------------------------------------------------------------------------------------------------------
    # Tensors
    # ------------------------------------------------------------------------------------------------------------

    def tag(self, t: torch.Tensor, dev: torch.device, stream: _StreamState, *, written: bool = True) -> None:
        """`t` lives on `dev`; if `written`, `stream` just produced it."""
        new = getattr(t, "_hg_dev", None) is None
        t._hg_dev = dev
        if written or new:
            stream.seq += 1
            t._hg_stream, t._hg_seq = stream, stream.seq
        if new:
            self._track(t, stream)

    def _track(self, t: torch.Tensor, stream: _StreamState) -> None:
        try:
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):
            return
        if not ptr or not nbytes:
            return
        block = self._blocks.get(ptr)
        if block is None:
            block = self._blocks[ptr] = _Block(stream)
            d = stream.device
            self.live_bytes[d] += nbytes
            self.peak_bytes[d] = max(self.peak_bytes[d], self.live_bytes[d])
            block.nbytes = nbytes
        block.refs += 1
        t._hg_block = block
        weakref.finalize(t, self._release, ptr, block)

    def _release(self, ptr: int, block: _Block) -> None:
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

    def use(self, t: torch.Tensor, stream: _StreamState, what: str) -> None:
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

    def record_stream(self, t: torch.Tensor, stream: _StreamState) -> None:
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


_REAL_COMPILE = torch.compile

# A C extension module with nothing in it: what Triton's launcher needs of the host (a C compiler, Python.h), without
# what a CPU machine lacks (the real launcher also includes CUDA's headers and links libcuda).
_LAUNCHER_SOURCE = """#include <Python.h>
static struct PyModuleDef launcher = {PyModuleDef_HEAD_INIT, "hgbench_standin_launcher", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_hgbench_standin_launcher(void) { return PyModule_Create(&launcher); }
"""


def build_triton_launcher() -> None:
    """What Triton does before a process's first kernel on a GPU: build its launcher as a C extension, through
    Triton's own build code (``$CC``, else gcc or clang on PATH, against Python.h; cached in ``TRITON_CACHE_DIR``),
    and load it. Without a compiler or the headers this raises what it raises on a GPU machine."""
    try:
        from triton.runtime.build import compile_module_from_src
    except ImportError as exc:  # inductor's own words when Triton is missing
        raise RuntimeError(
            "Cannot find a working triton installation. Either the package is not installed or it is too old."
        ) from exc
    compile_module_from_src(_LAUNCHER_SOURCE, "hgbench_standin_launcher")


def _clear_device_caches() -> None:
    """hgbench's per-device caches of tensors: one made on a stand-in GPU must not outlive it (nor one made without
    the stand-in be taken for a GPU tensor)."""
    from hgbench.data import device_decode
    from hgbench.eval import decoding
    from hgbench.train import compile_probe

    decoding._flip_index_on.cache_clear()
    device_decode._mean_on.cache_clear()
    compile_probe.forget_probes()  # probed on a stand-in GPU: says nothing of the next stand-in's host


def dev_of(t: torch.Tensor) -> torch.device | None:
    return getattr(t, "_hg_dev", None)


def _getset(func: Any) -> tuple[str, str] | None:
    """("get"|"set", attribute) when `func` is a Tensor property's getter or setter."""
    name = getattr(func, "__name__", "")
    owner = getattr(func, "__self__", None)
    if name in ("__get__", "__set__", "__delete__") and owner is not None and hasattr(owner, "__objclass__"):
        return name[2:-2], owner.__name__
    return None


class _Mode(TorchFunctionMode):
    """Runs every torch call on the CPU while keeping up the fiction that some tensors are on a GPU."""

    def __init__(self, gpu: CudaStandin) -> None:
        super().__init__()
        self.gpu = gpu

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return self._call(func, args, dict(kwargs or {}))

    # The dispatch, case by case -------------------------------------------------------------------------------

    def _call(self, func: Any, args: tuple, kwargs: dict) -> Any:
        gpu = self.gpu
        prop = _getset(func)
        if prop is not None:
            return self._property(func, prop, args, kwargs)
        name = getattr(func, "__name__", "")
        if func is torch.Tensor.to:
            return self._to(args, kwargs)
        if func is torch.Tensor.cuda:
            target = args[1] if len(args) > 1 else kwargs.get("device", "cuda")
            target = "cuda" if target is None else target
            return self._transfer(args[0], gpu.resolve(target), kwargs.get("non_blocking", False), None, None)
        if func is torch.Tensor.cpu:
            return self._transfer(args[0], torch.device("cpu"), False, None, None, what="Tensor.cpu")
        if func is torch.Tensor.copy_:
            return self._copy(args, kwargs)
        if func is torch.Tensor.pin_memory:
            return self._pin_memory(args[0])
        if func is torch.Tensor.is_pinned:
            return gpu.is_pinned(args[0])
        if func is torch.Tensor.record_stream:
            t, stream = args[0], args[1]
            if dev_of(t) is None:
                raise RuntimeError("record_stream: the tensor is not on a CUDA device")
            gpu.record_stream(t, gpu.state(stream.device_index, stream.stream_id))
            return None
        if func is torch.Tensor.__reduce_ex__ and dev_of(args[0]) is not None:
            # torch.save of a GPU tensor: a copy to the host, stored as a host tensor (a checkpoint is loaded with
            # map_location="cpu" anyway).
            gpu.host_read(args[0], "torch.save")
            return torch.Tensor.__reduce_ex__(args[0].detach().clone(), *args[1:])
        if name in _READS + _NUMPY and args and isinstance(args[0], torch.Tensor) and dev_of(args[0]) is not None:
            if name in _NUMPY:
                raise TypeError(
                    f"can't convert {dev_of(args[0])} device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                    "to host memory first."
                )
            gpu.host_read(args[0], f"Tensor.{name}")
            return func(*args, **kwargs)
        if name in _METADATA:
            return func(*args, **kwargs)
        if _is_decode_jpegs_cuda(func):
            return self._decode_jpegs(args, kwargs)
        if name in KERNELS and func is getattr(torch, name, None):
            return self._op(KERNELS[name], name, args, kwargs)  # SyncBatchNorm's CUDA-only kernels, on the CPU
        return self._op(func, name, args, kwargs)

    def _property(self, func: Any, prop: tuple[str, str], args: tuple, kwargs: dict) -> Any:
        kind, attr = prop
        t = args[0]
        dev = dev_of(t) if isinstance(t, torch.Tensor) else None
        if kind == "get":
            if attr == "device" and dev is not None:
                return dev
            if attr == "is_cuda":
                return dev is not None
            if attr == "is_cpu" and dev is not None:
                return False
            if attr == "is_pinned":
                return self.gpu.is_pinned(t)
            out = func(*args, **kwargs)
            if dev is not None and isinstance(out, torch.Tensor) and dev_of(out) is None:
                # .grad (made by the autograd engine), .data, .T, ...: the same device as their owner
                self.gpu.tag(out, dev, self.gpu.stream_of(dev.index), written=False)
            return out
        out = func(*args, **kwargs)
        if kind == "set" and attr == "data" and isinstance(args[1], torch.Tensor):
            new = dev_of(args[1])
            if new is not None:  # a module's .to("cuda"): the parameter now lives where its data does
                t._hg_dev, t._hg_stream, t._hg_seq = new, args[1]._hg_stream, args[1]._hg_seq
                t._hg_block = getattr(args[1], "_hg_block", None)
            elif dev is not None:
                t._hg_dev = None
        return out

    def _to(self, args: tuple, kwargs: dict) -> Any:
        t = args[0]
        rest, kw = args[1:], dict(kwargs)
        copy = kw.pop("copy", False)
        if rest and isinstance(rest[0], torch.Tensor):  # to(other): other's device and dtype
            other = rest[0]
            target, dtype, non_blocking = dev_of(other) or other.device, other.dtype, bool(rest[1:2] and rest[1])
            memory_format = kw.get("memory_format")
        else:
            target, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*rest, **kw)
        target = self.gpu.resolve(target) if target is not None else None
        src = dev_of(t) or t.device
        if target is None or target == src:
            out = t.to(dtype=dtype or t.dtype, memory_format=memory_format or torch.preserve_format, copy=copy)
            if dev_of(t) is not None and out is not t:
                self.gpu.use(t, self.gpu.stream_of(src.index), "Tensor.to")
                self.gpu.tag(out, src, self.gpu.stream_of(src.index))
            return out
        return self._transfer(t, target, non_blocking, dtype, memory_format)

    def _transfer(
        self,
        t: torch.Tensor,
        target: torch.device,
        non_blocking: bool,
        dtype: Any,
        memory_format: Any,
        *,
        what: str = "Tensor.to",
    ) -> torch.Tensor:
        gpu = self.gpu
        src = dev_of(t)
        fmt = memory_format or torch.preserve_format
        if src is None and target.type == "cuda":  # upload
            self._check_upload(t, non_blocking, what, target.index)
            out = t.to(dtype=dtype or t.dtype, memory_format=fmt, copy=True)
            gpu.tag(out, target, gpu.stream_of(target.index))
            return out
        if src is None:
            return t.to(target, dtype=dtype or t.dtype, memory_format=fmt)
        if target.type == "cpu":  # download
            gpu.host_read(t, what)
            return t.to(dtype=dtype or t.dtype, memory_format=fmt, copy=True)
        if target.type != "cuda":
            raise RuntimeError(f"the CUDA stand-in cannot copy to {target}")
        gpu.use(t, gpu.stream_of(src.index), "a device-to-device copy")
        out = t.to(dtype=dtype or t.dtype, memory_format=fmt, copy=True)
        gpu.tag(out, target, gpu.stream_of(target.index))
        return out

    def _check_upload(self, host: torch.Tensor, non_blocking: bool, what: str, device: int) -> None:
        gpu = self.gpu
        if non_blocking and not gpu.is_pinned(host) and host.numel() > 1:
            gpu.violation(
                f"{what}(non_blocking=True) of a pageable host tensor {tuple(host.shape)}: CUDA copies it "
                "synchronously; pin it first (pin_memory) or say non_blocking=False"
            )
        if not non_blocking:
            self._synchronous_upload(f"{what} of {tuple(host.shape)}", device)

    def _synchronous_upload(self, what: str, device: int) -> None:
        """A copy of host data to the GPU that is not ``non_blocking``: torch copies on the current stream and then
        waits for that stream (``memcpy_and_sync``), so the host waits for every kernel queued before it."""
        gpu = self.gpu
        if gpu.loop_depth:
            gpu.violation(f"a synchronous upload ({what}) inside a batch loop")
        stream = gpu.stream_of(device)
        gpu.host_waited(gpu.snapshot(stream), f"a synchronous upload ({what})")

    def _copy(self, args: tuple, kwargs: dict) -> torch.Tensor:
        gpu = self.gpu
        dst, src = args[0], args[1]
        non_blocking = bool(args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        ddev, sdev = dev_of(dst), dev_of(src) if isinstance(src, torch.Tensor) else None
        if ddev is None and sdev is None:
            return torch.Tensor.copy_(dst, src, non_blocking)
        if ddev is None:  # download into host memory
            stream = gpu.stream_of(sdev.index)
            if non_blocking and gpu.is_pinned(dst):
                gpu.use(src, stream, "an asynchronous download")
            else:
                gpu.host_read(src, "Tensor.copy_ to host memory")
            return torch.Tensor.copy_(dst, src, non_blocking)
        stream = gpu.stream_of(ddev.index)
        gpu.use(dst, stream, "Tensor.copy_ (destination)")
        if sdev is None and isinstance(src, torch.Tensor) and src.dim() > 0:
            self._check_upload(src, non_blocking, "Tensor.copy_", ddev.index)
        elif sdev is not None:
            gpu.use(src, gpu.stream_of(sdev.index), "Tensor.copy_ (source)")
        torch.Tensor.copy_(dst, src, non_blocking)
        gpu.tag(dst, ddev, stream)
        return dst

    def _pin_memory(self, t: torch.Tensor) -> torch.Tensor:
        if dev_of(t) is not None:
            raise RuntimeError(f"cannot pin '{t.type()}' only dense CPU tensors can be pinned")
        if self.gpu.is_pinned(t):
            return t
        out = t.clone()
        self.gpu.pin(out)
        return out

    def _op(self, func: Any, name: str, args: tuple, kwargs: dict) -> Any:
        gpu = self.gpu
        pinned = kwargs.get("pin_memory") is True
        if "pin_memory" in kwargs:
            kwargs.pop("pin_memory")
        devs: list[torch.device] = []
        want = kwargs.get("device")
        if want is not None and not isinstance(want, torch.Tensor):
            want = gpu.resolve(want)
            if want.type == "cuda":
                devs.append(want)
                kwargs["device"] = "cpu"
                if pinned:
                    raise RuntimeError("Only dense CPU tensors can be pinned")
        flat, _ = tree_flatten((args, kwargs))
        tensors = [x for x in flat if isinstance(x, torch.Tensor)]
        devs += [dev_of(x) for x in tensors if dev_of(x) is not None]
        if not devs:
            out = func(*args, **kwargs)
            if pinned:
                tree_map(lambda o: gpu.pin(o) if isinstance(o, torch.Tensor) else None, out)
            return out
        dev = devs[0]
        others = sorted({str(d) for d in devs if d != dev})
        if others:
            self._mixed(name, dev, others[0])
        host = [x for x in tensors if dev_of(x) is None and x.dim() > 0 and x.device.type == "cpu"]
        if host and name not in _INDEX_OK:
            self._mixed(name, dev, "cpu")
        # Ops whose output size the host must know: a nonzero on the GPU, read back (the host waits for the stream).
        if name in ("__getitem__", "__setitem__", "index_put_") and self._bool_index(args):
            gpu.host_waited(gpu.snapshot(gpu.stream_of(dev.index)), f"Tensor.{name} with a boolean mask (a nonzero)")
        if name in ("nonzero", "masked_select", "unique", "argwhere"):
            gpu.host_waited(gpu.snapshot(gpu.stream_of(dev.index)), f"torch.{name} (its output size)")
        if self._from_host_data(name, args, want):
            self._synchronous_upload(f"{name} from host data", dev.index)
        stream = gpu.stream_of(dev.index)
        for x in tensors:
            if dev_of(x) is not None:
                gpu.use(x, stream, name or str(func))
        ctx = contextlib.nullcontext()
        if torch.is_autocast_enabled("cuda"):
            gpu.autocast_ops += 1
            ctx = torch.autocast("cpu", dtype=torch.get_autocast_dtype("cuda"))
        with ctx:
            out = func(*args, **kwargs)
        ids = {id(x) for x in tensors}

        def tag(o: Any) -> Any:
            if isinstance(o, torch.Tensor):
                gpu.tag(o, dev, stream, written=id(o) not in ids or name.endswith("_") or name == "__setitem__")
            return o

        tree_map(tag, out)
        if name == "__setitem__":
            gpu.tag(args[0], dev, stream)
        return out

    @staticmethod
    def _from_host_data(name: str, args: tuple, want: Any) -> bool:
        """`torch.tensor`/`as_tensor(data, device="cuda")` or `gpu_tensor.new_tensor(data)` of data not on a GPU."""
        if name == "new_tensor":
            data = args[1] if len(args) > 1 else None
        elif name in ("tensor", "as_tensor") and isinstance(want, torch.device) and want.type == "cuda":
            data = args[0] if args else None
        else:
            return False
        return not (isinstance(data, torch.Tensor) and dev_of(data) is not None)

    @staticmethod
    def _bool_index(args: tuple) -> bool:
        flat, _ = tree_flatten(args[1:2])
        return any(isinstance(x, torch.Tensor) and x.dtype == torch.bool for x in flat)

    def _mixed(self, name: str, a: torch.device, b: str) -> None:
        message = (
            f"Expected all tensors to be on the same device, but found at least two devices, {a} and {b}! "
            f"(in {name or 'an op'})"
        )
        self.gpu.violations.append(message)
        raise RuntimeError(message)

    def _decode_jpegs(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """torchvision's nvjpeg batch decode (torchvision 0.29): outputs allocated on the current stream, written
        from the decoder's own stream, which does not wait for the current one; the host synchronises the decoder's
        stream before and after decoding (it is blocked for the decode: ``decoder_syncs`` counts them); then the
        current stream waits for the decoder's."""
        from torchvision.io import ImageReadMode, decode_jpeg

        gpu = self.gpu
        data, mode, device = args[0], args[1], args[2] if len(args) > 2 else kwargs["device"]
        dev = gpu.resolve(device)
        current = gpu.stream_of(dev.index)
        if current.freed_pending:
            gpu.violation(
                f"decode_jpeg(device='cuda') on {current.label}, which freed {current.freed_pending} block(s) whose "
                "queued reads the host has not seen complete: the decoder allocates its outputs there and writes them "
                "from its own stream without waiting (pytorch/vision PR 9606), so it may overwrite them before they "
                "are read; decode on a stream of its own"
            )
        private = gpu._decoder.setdefault(dev.index, gpu.new_stream(dev.index))
        gpu.host_waited(gpu.snapshot(private), "nvjpeg's cudaStreamSynchronize (before)", by_library=True)
        images = [decode_jpeg(d, mode=ImageReadMode(mode)) for d in data]
        gpu.decodes += 1
        for im in images:
            gpu.tag(im, dev, private)
            im._hg_block.alloc = current  # the block is from the current stream's pool
        gpu.host_waited(gpu.snapshot(private), "nvjpeg's cudaStreamSynchronize (after)", by_library=True)
        gpu.decoder_syncs += 1
        gpu.wait(current, gpu.snapshot(private), "nvjpeg's event")
        return images


def _is_decode_jpegs_cuda(func: Any) -> bool:
    op = getattr(torch.ops.image, "decode_jpegs_cuda", None)
    return op is not None and (func is op or func is getattr(op, "default", None))


def _make_stream_class(gpu: CudaStandin) -> type:
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


def _make_event_class(gpu: CudaStandin) -> type:
    class Event:
        """`torch.cuda.Event`, standing in: records what its stream has done; `query` is False until the host
        synchronised (an infinitely slow GPU); `elapsed_time` is the host clock between the records."""

        def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> None:
            self.enable_timing = bool(enable_timing)
            self._snap: dict | None = None
            self._stream: _StreamState | None = None
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


class NcclLikeGroup:
    """Stands in for a process group of two identical ranks whose collectives, like NCCL's, refuse tensors that are
    not on the group's device; this process plays rank 0.

    NCCL's object collectives (``all_gather_object``, ``broadcast_object_list``) move the pickled object through the
    *current* CUDA device, so on CUDA that must be the process's own GPU; ``barrier`` takes ``device_ids``; DDP takes
    ``device_ids=[index]`` of the module's GPU (torch's `_get_device_index` checks the form). DDP itself is replaced
    by the module (its gradient all-reduce needs a real group and is not what is tested).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reduced: list[torch.device] = []
        self.inits: list[dict] = []

    def _current_gpu(self, what: str) -> None:
        if self.device.type == "cuda" and torch.cuda.current_device() != self.device.index:
            raise RuntimeError(
                f"{what} on NCCL goes through the current GPU {torch.cuda.current_device()}, not {self.device}"
            )

    def all_reduce(self, tensor: torch.Tensor, op: object = None, **kwargs: object) -> None:
        if tensor.device != self.device:
            raise RuntimeError(f"collective on a tensor on {tensor.device}; the group's device is {self.device}")
        self.reduced.append(tensor.device)
        tensor.mul_(2)  # the other rank holds the same value

    def all_gather_object(self, out: list, obj: object, **kwargs: object) -> None:
        self._current_gpu("all_gather_object")
        out[:] = [obj] * len(out)

    def broadcast_object_list(self, box: list, src: int = 0, **kwargs: object) -> None:
        self._current_gpu("broadcast_object_list")

    def barrier(self, *args: object, device_ids: list | None = None, **kwargs: object) -> None:
        if self.device.type == "cuda" and device_ids != [self.device.index]:
            raise RuntimeError(f"barrier(device_ids={device_ids}) on a group of {self.device}")

    def init_process_group(self, backend: str | None = None, **kwargs: object) -> None:
        self._current_gpu("init_process_group")
        self.inits.append({"backend": backend, **kwargs})

    def ddp(self, module: Any, device_ids: list | None = None, **kwargs: object) -> Any:
        from torch._utils import _get_device_index

        devices = {p.device for p in module.parameters()}
        if len(devices) != 1:
            raise ValueError(f"DistributedDataParallel's module is on {sorted(map(str, devices))}")
        (dev,) = devices
        if dev.type == "cuda":
            if device_ids is None or len(device_ids) != 1:
                raise ValueError("device_ids can only be None or contain a single element.")
            if _get_device_index(device_ids[0], True) != dev.index:
                raise ValueError(f"device_ids={device_ids} but the module is on {dev}")
        elif device_ids is not None:
            raise ValueError(f"DistributedDataParallel device_ids={device_ids} only work with GPU modules")
        return module

    def install(self, monkeypatch: pytest.MonkeyPatch) -> NcclLikeGroup:
        import torch.distributed as dist

        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)
        monkeypatch.setattr(dist, "all_gather_object", self.all_gather_object)
        monkeypatch.setattr(dist, "broadcast_object_list", self.broadcast_object_list)
        monkeypatch.setattr(dist, "barrier", self.barrier)
        monkeypatch.setattr(dist, "init_process_group", self.init_process_group)
        monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", self.ddp)
        return self


@contextlib.contextmanager
def cuda_standin(monkeypatch: pytest.MonkeyPatch, *, device_count: int = 1) -> Iterator[CudaStandin]:
    """`CudaStandin` installed for the block; fails if any rule was broken, even where the code caught the error."""
    gpu = CudaStandin(device_count).install(monkeypatch)
    try:
        yield gpu
    finally:
        gpu.uninstall()
