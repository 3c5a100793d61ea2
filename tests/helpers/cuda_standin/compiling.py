"""`torch.compile` under the stand-in: its arguments checked against torch.compile's signature, the model run
eagerly (inductor would emit Triton kernels for a GPU that is not there), and what compiling for a GPU asks of the
host kept: the first call with a GPU tensor builds Triton's launcher, so a host without a C compiler or Python.h fails
there as it would with a GPU."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from helpers.cuda_standin.streams import dev_of

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


def standin_compile(model: Any = None, *args: Any, **kwargs: Any) -> Any:
    """torch.compile's signature, checked; the model runs eagerly (inductor would emit Triton kernels for a GPU
    that is not there, and compilation is not what the stand-in tests). What compiling for a GPU asks of the host
    is kept: the first call with a GPU tensor builds Triton's launcher (`build_triton_launcher`), so a machine
    without a C compiler or Python.h fails there, as it would with a GPU."""
    inspect.signature(_REAL_COMPILE).bind(model, *args, **kwargs)
    if model is None:
        return lambda m: standin_compile(m, *args, **kwargs)
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
