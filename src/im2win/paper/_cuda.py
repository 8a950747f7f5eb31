"""Run-time compilation (NVRTC) and launch (CUDA driver API) of `kernels.cu`, via cuda-python.

Why NVRTC and not `torch.utils.cpp_extension.load_inline`: the ablation needs many
variants of one kernel template. NVRTC compiles one instantiation to a cubin in about a
second, in-process, with no host compiler, ninja or torch headers; `load_inline` runs nvcc
plus a host C++ build of a torch extension, about a minute per variant. The price is small:
arguments are packed by hand (`_Kernel.launch`) and each launch costs a few microseconds of
Python. Kernels run in torch's context (the device's primary context) on torch's current
stream, on tensors' `data_ptr()`.

cuda-python (`cuda-bindings`) is optional: nothing here is imported, and no driver call is
made, until a kernel is first launched. Compiled modules are cached per process, keyed by
(device, kernel name expression); the target is `sm_XY` from the device's compute
capability, read then.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.cu")

# ctypes of kernel arguments: a device pointer, an int, a 64-bit int.
PTR, INT, I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong

_lock = threading.Lock()


@functools.cache
def bindings():
    """(driver, nvrtc) modules of cuda-python; a clear error where it is not installed."""
    try:
        from cuda.bindings import driver, nvrtc
    except ImportError:
        try:  # cuda-python < 12.6 spelled them cuda.cuda and cuda.nvrtc
            from cuda import cuda as driver
            from cuda import nvrtc
        except ImportError as e:
            raise RuntimeError(
                "the paper's CUDA kernels (im2win.paper) need cuda-python: "
                "pip install cuda-bindings (a CUDA 12 or 13 build matching the driver)"
            ) from e
    return driver, nvrtc


def _check(result, what: str):
    """Unpack a cuda-python (status, *values) tuple; raise with the error's name if not success."""
    driver, nvrtc = bindings()
    status, *values = result if isinstance(result, tuple) else (result,)
    if isinstance(status, nvrtc.nvrtcResult):
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, msg = nvrtc.nvrtcGetErrorString(status)
            raise RuntimeError(f"{what} failed: {msg.decode()} ({status.name})")
    elif status != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(status)
        _, msg = driver.cuGetErrorString(status)
        name = name.decode() if name else str(status)
        raise RuntimeError(f"{what} failed: {name}: {msg.decode() if msg else ''}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _arch(major: int, minor: int) -> tuple[str, bool]:
    """('sm_XY', True) for a cubin when NVRTC knows the chip, else the newest PTX target."""
    _, nvrtc = bindings()
    supported = _check(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
    cc = 10 * major + minor
    if cc in supported:
        return f"sm_{cc}", True
    older = [a for a in supported if a <= cc]
    if not older:
        raise RuntimeError(f"NVRTC supports none of compute capability <= {cc}: {supported}")
    return f"compute_{max(older)}", False  # PTX, compiled by the driver at load


@functools.cache
def compile_source(name_expression: str, arch: str, cubin: bool) -> tuple[bytes, str]:
    """(cubin or PTX image, lowered kernel name) of one kernel instantiation of kernels.cu."""
    _, nvrtc = bindings()
    source = SOURCE.read_bytes()
    prog = _check(nvrtc.nvrtcCreateProgram(source, b"im2win_paper.cu", 0, [], []),
                  "nvrtcCreateProgram")  # fmt: skip
    try:
        name = name_expression.encode()
        _check(nvrtc.nvrtcAddNameExpression(prog, name), "nvrtcAddNameExpression")
        # IEEE fp32: no fast math; FMA contraction is fine (and what the paper's FFMA is).
        options = [f"--gpu-architecture={arch}".encode(), b"-std=c++17", b"-lineinfo"]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            log = b" " * size
            _check(nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
            raise RuntimeError(
                f"NVRTC could not compile {name_expression} for {arch} ({status.name}):\n"
                f"{log.decode(errors='replace')}"
            )
        lowered = _check(nvrtc.nvrtcGetLoweredName(prog, name), "nvrtcGetLoweredName")
        get_size, get = (
            (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
            if cubin
            else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        )
        image = b" " * _check(get_size(prog), "nvrtcGet(CUBIN|PTX)Size")
        _check(get(prog, image), "nvrtcGet(CUBIN|PTX)")
        return image, lowered.decode()
    finally:
        _check(nvrtc.nvrtcDestroyProgram(prog), "nvrtcDestroyProgram")


def _ensure_context(device: torch.device) -> None:
    """Make torch's context for `device` (its primary context) current on this thread."""
    driver, _ = bindings()
    torch.cuda.init()
    with torch.cuda.device(device):
        torch.cuda.current_stream(device)  # torch creates/binds the primary context
        ctx = _check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
        if ctx is None or int(ctx) == 0:
            dev = _check(driver.cuDeviceGet(device.index), "cuDeviceGet")
            ctx = _check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
            _check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")


class _Kernel:
    """One loaded kernel: its CUfunction and the ctypes of its arguments."""

    def __init__(self, function, arg_types: tuple, device: torch.device):
        self.function = function
        self.arg_types = arg_types
        self.device = device
        self.max_dynamic_smem = 48 * 1024

    def set_dynamic_smem(self, nbytes: int) -> None:
        """Allow `nbytes` of dynamic shared memory (past 48 KiB a kernel must opt in)."""
        if nbytes <= self.max_dynamic_smem:
            return
        driver, _ = bindings()
        attr = driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        dev = _check(driver.cuDeviceGet(self.device.index), "cuDeviceGet")
        limit = _check(driver.cuDeviceGetAttribute(attr, dev), "cuDeviceGetAttribute")
        if nbytes > limit:
            raise ValueError(
                f"kernel needs {nbytes} bytes of shared memory; the device has {limit}"
            )
        fattr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        _check(driver.cuFuncSetAttribute(self.function, fattr, nbytes), "cuFuncSetAttribute")
        self.max_dynamic_smem = nbytes

    def launch(self, grid: tuple[int, int, int], block: tuple[int, int, int], args,
               smem: int = 0) -> None:  # fmt: skip
        driver, _ = bindings()
        if len(args) != len(self.arg_types):
            raise TypeError(f"kernel takes {len(self.arg_types)} arguments, got {len(args)}")
        values = [t(a) for t, a in zip(self.arg_types, args, strict=True)]
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        stream = driver.CUstream(torch.cuda.current_stream(self.device).cuda_stream)
        _check(
            driver.cuLaunchKernel(self.function, *grid, *block, smem, stream,
                                  ctypes.addressof(pointers), 0),
            "cuLaunchKernel",
        )  # fmt: skip


_kernels: dict[tuple[int, str], _Kernel] = {}


def kernel(name_expression: str, arg_types: tuple, device: torch.device) -> _Kernel:
    """The kernel `name_expression` of kernels.cu, compiled and loaded for `device` (cached)."""
    key = (device.index, name_expression)
    found = _kernels.get(key)
    if found is not None:
        return found
    driver, _ = bindings()
    with _lock:
        if key in _kernels:
            return _kernels[key]
        _check(driver.cuInit(0), "cuInit")
        major, minor = torch.cuda.get_device_capability(device)
        arch, cubin = _arch(major, minor)
        image, lowered = compile_source(name_expression, arch, cubin)
        _ensure_context(device)
        with torch.cuda.device(device):
            module = _check(driver.cuModuleLoadData(image), f"cuModuleLoadData({name_expression})")
            function = _check(driver.cuModuleGetFunction(module, lowered.encode()),
                              f"cuModuleGetFunction({name_expression})")  # fmt: skip
        _kernels[key] = _Kernel(function, arg_types, device)
        return _kernels[key]
