"""The stand-in GPUs themselves: `CudaStandin.install` answers torch.cuda's C layer (``torch._C._cuda_*``, so
torch.cuda's own Python code and its argument checks run), replaces what has no Python layer (`Stream`, `Event`, the
device properties, torch.compile), spies on hgbench's batch loops, runs a Python autograd Function's backward under
the stand-in and enters the tensor mode; `uninstall` leaves it, and `monkeypatch` undoes the rest."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils._pytree import tree_flatten

from helpers.cuda_standin.compiling import standin_compile
from helpers.cuda_standin.stream_types import make_event_class, make_stream_class
from helpers.cuda_standin.streams import StreamRules, dev_of
from helpers.cuda_standin.tensor_mode import TensorMode

STANDIN_GPU_NAME = "NVIDIA H100 80GB HBM3 (hgbench CUDA stand-in, not a GPU)"


class CudaStandin(StreamRules):
    """Stands in for `device_count` CUDA GPUs; `install` it for one test (everything is undone by `monkeypatch`)."""

    def __init__(self, device_count: int = 1) -> None:
        super().__init__(device_count)
        self.count = device_count
        self.current = 0
        self.decodes = 0  # batches the nvjpeg stand-in decoded
        self.decoder_syncs = 0  # decodes after which the host waited for the decoder's stream (torchvision's own sync)
        self.capability = (9, 0)  # an H100's; (7, 0), a V100's, has no native bf16
        self.autocast_ops = 0  # ops run under torch.autocast("cuda") (as the CPU's autocast of the same dtype)
        self._decoder = {}  # device -> the decoder's private stream

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
        monkeypatch.setattr(cuda, "Stream", make_stream_class(self))
        monkeypatch.setattr(cuda, "Event", make_event_class(self))
        monkeypatch.setattr(torch, "compile", standin_compile)
        # Set by a CUDA run (cuDNN autotuning): restored after the test like everything else.
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
        self._spy_batch_loops(monkeypatch)
        self._enter_autograd_backwards(monkeypatch)
        _clear_device_caches()
        mode = TensorMode(self)
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

    def _get_current_stream(self, i: int) -> tuple[int, int, int]:
        s = self._current_stream[self._index(i)]
        return (s.sid, s.device, 1)

    def _set_stream(self, stream_id: int, device_index: int, device_type: int) -> None:
        self._current_stream[self._index(device_index)] = self._streams[(self._index(device_index), stream_id)]

    def _set_sync_debug_mode(self, mode: int) -> None:
        self.sync_debug_mode = int(mode)

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


def _clear_device_caches() -> None:
    """hgbench's per-device caches of tensors: one made on a stand-in GPU must not outlive it (nor one made without
    the stand-in be taken for a GPU tensor)."""
    from hgbench.data import device_decode
    from hgbench.eval import decoding
    from hgbench.train import compile_probe

    decoding._flip_index_on.cache_clear()
    device_decode._mean_on.cache_clear()
    compile_probe.forget_probes()  # probed on a stand-in GPU: says nothing of the next stand-in's host
