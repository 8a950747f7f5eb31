"""PyTorch's CPU weight gradient of a strided 1x1 convolution on a channels-last fp32 input,
with oneDNN on and off, against float64: how many of 40 random inputs are off, and by how much.

    python notes/backward/onednn_wgrad_check.py
"""

import torch
import torch.nn.functional as F


def errors(onednn: bool) -> list[float]:
    found = []
    for seed in range(40):
        torch.manual_seed(seed)
        x = torch.randn(2, 4, 8, 8).to(memory_format=torch.channels_last)
        w = torch.randn(4, 4, 1, 1, requires_grad=True)
        dy = torch.randn(2, 4, 4, 4).to(memory_format=torch.channels_last)
        with torch.backends.mkldnn.flags(enabled=onednn):
            F.conv2d(x, w, stride=2).backward(dy)
        w64 = w.detach().double().requires_grad_()
        F.conv2d(x.double(), w64, stride=2).backward(dy.double())
        found.append(((w.grad - w64.grad).norm() / w64.grad.norm()).item())
    return found


if __name__ == "__main__":
    print(torch.__version__)
    for onednn in (True, False):
        errs = errors(onednn)
        wrong = [e for e in errs if e > 1e-4]
        print(
            f"oneDNN {'on ' if onednn else 'off'}: {len(wrong)} of {len(errs)} off by > 1e-4"
            + (f", {min(wrong):.2g}-{max(wrong):.2g} of the norm" if wrong else "")
        )
