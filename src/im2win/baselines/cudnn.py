"""cuDNN's legacy forward algorithms, one at a time, through ctypes on torch's libcudnn.so.9.

PyTorch only reaches cuDNN through its own algorithm choice; the paper compares against each
algorithm (cudnnConvolutionFwdAlgo_t), so we call cudnnConvolutionForward ourselves. Nothing
is loaded at import: the library and one handle per device are opened on the first `make`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import weakref
from ctypes import POINTER, c_char_p, c_float, c_int, c_size_t, c_void_p

import torch

from .common import Prepared, Unsupported, check_inputs, measure_extra_bytes, weight_like_input

# cudnnConvolutionFwdAlgo_t, in enum order.
ALGOS = (
    "IMPLICIT_GEMM",
    "IMPLICIT_PRECOMP_GEMM",
    "GEMM",
    "DIRECT",
    "FFT",
    "FFT_TILING",
    "WINOGRAD",
    "WINOGRAD_NONFUSED",
)
_FORMAT = {False: 0, True: 1}  # cudnnTensorFormat_t: NCHW, NHWC
_DTYPE = {torch.float32: 0, torch.float16: 2, torch.bfloat16: 9}  # cudnnDataType_t
_COMPUTE_FLOAT = 0
_CROSS_CORRELATION = 1
_TENSOR_OP_MATH, _FMA_MATH = 1, 3  # cudnnMathType_t; FMA forbids TF32 for fp32 data

_V, _I, _PV = c_void_p, c_int, POINTER(c_void_p)
_PROTOTYPES = {
    "cudnnGetVersion": (c_size_t, []),
    "cudnnGetErrorString": (c_char_p, [_I]),
    "cudnnCreate": (_I, [_PV]),
    "cudnnSetStream": (_I, [_V, _V]),
    "cudnnCreateTensorDescriptor": (_I, [_PV]),
    "cudnnDestroyTensorDescriptor": (_I, [_V]),
    "cudnnSetTensor4dDescriptor": (_I, [_V, _I, _I, _I, _I, _I, _I]),
    "cudnnCreateFilterDescriptor": (_I, [_PV]),
    "cudnnDestroyFilterDescriptor": (_I, [_V]),
    "cudnnSetFilter4dDescriptor": (_I, [_V, _I, _I, _I, _I, _I, _I]),  # dtype before format
    "cudnnCreateConvolutionDescriptor": (_I, [_PV]),
    "cudnnDestroyConvolutionDescriptor": (_I, [_V]),
    "cudnnSetConvolution2dDescriptor": (_I, [_V, _I, _I, _I, _I, _I, _I, _I, _I]),
    "cudnnSetConvolutionGroupCount": (_I, [_V, _I]),
    "cudnnSetConvolutionMathType": (_I, [_V, _I]),
    "cudnnGetConvolution2dForwardOutputDim": (_I, [_V, _V, _V] + [POINTER(_I)] * 4),
    "cudnnGetConvolutionForwardWorkspaceSize": (_I, [_V, _V, _V, _V, _V, _I, POINTER(c_size_t)]),
    "cudnnConvolutionForward": (_I, [_V, _V, _V, _V, _V, _V, _V, _I, _V, c_size_t, _V, _V, _V]),
}


class CudnnError(RuntimeError):
    def __init__(self, call: str, status: int):
        self.call, self.status = call, status
        super().__init__(f"{call} returned {status_name(status)}")


def status_name(status: int) -> str:
    return _lib().cudnnGetErrorString(status).decode()


def _library_path() -> str:
    """The libcudnn.so.9 torch has loaded (another copy would be a second cuDNN)."""
    torch.backends.cudnn.version()  # makes torch load cuDNN if it has not yet
    pattern = re.compile(r"/libcudnn\.so(\.\d+)*$")
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if pattern.search(path):
                return path
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libcudnn.so.9")
    return torch_lib if os.path.exists(torch_lib) else "libcudnn.so.9"


@functools.cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(_library_path())
    for fn_name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, fn_name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _check(call: str, status: int) -> None:
    if status != 0:
        raise CudnnError(call, status)


def _call(fn_name: str, *args) -> None:
    _check(fn_name, getattr(_lib(), fn_name)(*args))


@functools.cache
def _handle(device_index: int) -> c_void_p:
    """One cudnnHandle_t per device for the whole process (never destroyed)."""
    handle = c_void_p()
    with torch.cuda.device(device_index):
        _call("cudnnCreate", ctypes.byref(handle))
    return handle


def library_info() -> dict:
    """Path and version of the cuDNN the baselines call (loads it)."""
    return {"path": _library_path(), "version": _lib().cudnnGetVersion()}


class _Descriptors:
    """x, w, y and convolution descriptors; destroyed when the owner is collected."""

    _KINDS = (("x", "Tensor"), ("w", "Filter"), ("y", "Tensor"), ("conv", "Convolution"))

    def __init__(self):
        self.handles: dict[str, c_void_p] = {}
        for key, kind in self._KINDS:
            self.handles[key] = c_void_p()
            _call(f"cudnnCreate{kind}Descriptor", ctypes.byref(self.handles[key]))
        destroy = [(f"cudnnDestroy{kind}Descriptor", self.handles[k]) for k, kind in self._KINDS]
        weakref.finalize(self, _destroy, destroy)

    def __getattr__(self, key: str) -> c_void_p:
        try:
            return self.__dict__["handles"][key]
        except KeyError:
            raise AttributeError(key) from None


def _destroy(descriptors) -> None:
    lib = _lib()
    for fn_name, handle in descriptors:
        getattr(lib, fn_name)(handle)


def make(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    tier: str = "fp32",
    *,
    algo: str,
) -> Prepared:
    """cudnnConvolutionForward with one fixed algorithm (`algo`, a name from ALGOS)."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    name = f"cudnn-{algo}"
    spec = check_inputs(name, x, weight, bias, stride, padding, dilation, groups, tier)
    pads = spec.symmetric_padding
    if pads is None:
        raise Unsupported(f"{name}: cuDNN pads symmetrically, got padding {spec.params.padding}")
    if algo == "WINOGRAD_NONFUSED" and tier == "fp32" and max(weight.shape[2:]) > 3:
        # NOTE: measured on H100, cuDNN 9.19: 5x5 (paper conv5) lands at 1e-3 relative error
        # even with FMA math, 3x3 at 2e-6..5e-6: only 3x3 is fp32-accurate.
        raise Unsupported(f"{name}: not fp32-accurate for filters larger than 3x3")
    w = weight_like_input(weight, spec)  # cuDNN's NHWC algorithms take NHWC (KRSC) filters
    fmt, dtype = _FORMAT[spec.channels_last], _DTYPE[x.dtype]
    math = _FMA_MATH if tier == "fp32" else _TENSOR_OP_MATH
    algo_id = ALGOS.index(algo)
    device = x.device
    (n, c, h, width), (k, cg, r, s) = x.shape, w.shape

    d = _Descriptors()
    try:
        _call("cudnnSetTensor4dDescriptor", d.x, fmt, dtype, n, c, h, width)
        _call("cudnnSetFilter4dDescriptor", d.w, dtype, fmt, k, cg, r, s)
        _call("cudnnSetTensor4dDescriptor", d.y, fmt, dtype, *spec.out_shape)
        _call(
            "cudnnSetConvolution2dDescriptor",
            d.conv, *pads, *spec.params.stride, *spec.params.dilation,
            _CROSS_CORRELATION, _COMPUTE_FLOAT,
        )  # fmt: skip
        _call("cudnnSetConvolutionGroupCount", d.conv, groups)
        _call("cudnnSetConvolutionMathType", d.conv, math)
        dims = [c_int() for _ in range(4)]
        _call("cudnnGetConvolution2dForwardOutputDim", d.conv, d.x, d.w, *map(ctypes.byref, dims))
        cudnn_shape = tuple(v.value for v in dims)
        if cudnn_shape != spec.out_shape:
            raise Unsupported(f"{name}: cuDNN's output {cudnn_shape} is not {spec.out_shape}")
        ws_size = c_size_t()
        handle = _handle(device.index)
        _call(
            "cudnnGetConvolutionForwardWorkspaceSize",
            handle, d.x, d.w, d.conv, d.y, algo_id, ctypes.byref(ws_size),
        )  # fmt: skip
    except CudnnError as e:
        raise Unsupported(f"{name} ({tier}, {_layout(spec)}): {e}") from None
    try:
        workspace = torch.empty(ws_size.value, dtype=torch.uint8, device=device)
    except torch.OutOfMemoryError:
        gib = ws_size.value / 2**30
        raise Unsupported(f"{name}: its {gib:.1f} GiB workspace does not fit") from None

    one, zero = c_float(1.0), c_float(0.0)  # scaling factors are float for non-double data
    alpha, beta = c_void_p(ctypes.addressof(one)), c_void_p(ctypes.addressof(zero))
    x_ptr, w_ptr = c_void_p(x.data_ptr()), c_void_p(w.data_ptr())
    ws_ptr = c_void_p(workspace.data_ptr() if ws_size.value else None)
    forward = _lib().cudnnConvolutionForward
    set_stream = _lib().cudnnSetStream
    xd, wd, yd, cd = d.x, d.w, d.y, d.conv
    bias_view = None if bias is None else bias.view(1, -1, 1, 1)
    out_kwargs = dict(dtype=x.dtype, device=device, memory_format=spec.memory_format)

    def run() -> torch.Tensor:
        # The handle is shared, so bind it to the caller's current stream on every call.
        stream = torch.cuda.current_stream(device).cuda_stream
        _check("cudnnSetStream", set_stream(handle, stream))
        y = torch.empty(spec.out_shape, **out_kwargs)
        status = forward(
            handle, alpha, xd, x_ptr, wd, w_ptr, cd, algo_id, ws_ptr, ws_size,
            beta, yd, c_void_p(y.data_ptr()),
        )  # fmt: skip
        _check("cudnnConvolutionForward", status)
        if bias_view is not None:  # a separate kernel: the legacy forward has no bias
            y += bias_view
        return y

    run.buffers = (d, workspace, x, w, one, zero)  # pins what the raw pointers refer to

    # The workspace query can succeed for an algorithm that then fails to execute.
    try:
        run()
        torch.cuda.synchronize(device)
    except CudnnError as e:
        raise Unsupported(f"{name} ({tier}, {_layout(spec)}): {e}") from None
    info = {
        "algo": algo,
        "math": "FMA" if math == _FMA_MATH else "TENSOR_OP",
        "workspace_bytes": ws_size.value,
        "extra_bytes_source": "analytic (cuDNN workspace)",
        "weight_copied": w.data_ptr() != weight.data_ptr(),
        "measured_extra_bytes": measure_extra_bytes(run, device),
    }
    return Prepared(name, run, ws_size.value, info)


def _layout(spec) -> str:
    return "NHWC" if spec.channels_last else "NCHW"
