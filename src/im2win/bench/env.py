"""Provenance carried by every result row: what ran, on what, from which code, when, how."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import torch
import triton

_PACKAGE_DIR = Path(__file__).resolve().parent


def git_commit(cwd: Path = _PACKAGE_DIR) -> str:
    """HEAD of the repository holding this package, '-dirty' if tracked files differ from it.

    Where the tree is a copy without git (the GPU machine), IM2WIN_COMMIT names it.
    """
    if os.environ.get("IM2WIN_COMMIT"):
        return os.environ["IM2WIN_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        # A number measured on uncommitted code cannot be reproduced from the SHA alone.
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=cwd).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def cudnn_version() -> str:
    v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return format_cudnn_version(v) if v else "none"


def format_cudnn_version(v: int) -> str:
    """91900 -> '9.19.0' (cuDNN 9: M*10000 + m*100 + p; cuDNN 8 and older: M*1000 + m*100 + p)."""
    if v >= 10000:
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return f"{v // 1000}.{v // 100 % 10}.{v % 100}"


def provenance(device: torch.device, command: str) -> dict[str, str]:
    """GPU name, library versions, git commit, UTC date and the command line of this run."""
    return {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "none",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cudnn": cudnn_version(),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
