"""Host-side size arithmetic in plain Python.

`triton.cdiv` and `triton.next_power_of_2` dispatch through Triton's JIT machinery, a few
microseconds a call, and a launch needed a dozen of them (notes/tuning.md, host time).
"""


def strides_or_zeros(t, dims: int = 1) -> tuple[int, ...]:
    """`t`'s strides, or `dims` zeros for an optional tensor left out (a kernel never reads
    it: its pointer is None)."""
    return (0,) * dims if t is None else t.stride()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(0, n - 1).bit_length()
