"""The stand-in's tensor mode: every torch call runs on the CPU while some tensors say they are on a GPU.

A `TorchFunctionMode` tags each tensor made on "cuda:N" and answers ``.device``/``.is_cuda`` for it; an op that mixes
devices fails as on a GPU; host reads, uploads and downloads go through the host-sync rules (`StreamRules.host_read`,
a synchronous upload, a ``non_blocking`` upload from pageable memory); ``torch.autocast("cuda")`` runs as the CPU's;
torchvision's nvjpeg decode is modelled as torchvision 0.29 has it; SyncBatchNorm's CUDA-only kernels run on the CPU.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from helpers.cuda_standin.streams import dev_of
from helpers.standin_kernels import KERNELS

if TYPE_CHECKING:
    from helpers.cuda_standin.device import CudaStandin

_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__")
_NUMPY = ("numpy", "__array__")
_METADATA = ("_has_compatible_shallow_copy_type", "is_same_size", "is_set_to")  # compare tensors, compute nothing
_INDEX_OK = ("__getitem__", "__setitem__", "index_put_", "index_put", "index_select")  # CPU indices are allowed


def _getset(func: Any) -> tuple[str, str] | None:
    """("get"|"set", attribute) when `func` is a Tensor property's getter or setter."""
    name = getattr(func, "__name__", "")
    owner = getattr(func, "__self__", None)
    if name in ("__get__", "__set__", "__delete__") and owner is not None and hasattr(owner, "__objclass__"):
        return name[2:-2], owner.__name__
    return None


class TensorMode(TorchFunctionMode):
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
