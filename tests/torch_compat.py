"""Import torchvision (and afterwards transformers / timm) on a CPU-only torch.

PyPI's torchvision wheel is built against CUDA torch: `import torchvision` registers fake
(meta) kernels for its compiled operators with `torch.library.register_fake`, which fails on
the CPU torch wheel ("operator torchvision::nms does not exist"). The pure-Python model
definitions the parity tests need do not use those operators, so the registration is skipped
while torchvision is imported. transformers and timm import torchvision themselves, so this
must run first in the process. Test-only: the library never imports torch at run time.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType


@contextlib.contextmanager
def _registrations_skipped():
    import torch.library

    original = torch.library.register_fake

    def skip(op, func=None, /, *args, **kwargs):
        del op, args, kwargs
        return func if func is not None else (lambda f: f)

    torch.library.register_fake = skip
    try:
        yield
    finally:
        torch.library.register_fake = original


def import_torchvision() -> ModuleType:
    """torchvision with its compiled-operator registrations skipped (idempotent)."""
    import sys

    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    with _registrations_skipped():
        return importlib.import_module("torchvision")
