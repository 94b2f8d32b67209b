"""XLA compile options of the jitted train step, per platform.

On XLA:CPU every train step compiles with ``CPU_CONVOLUTION_OPTIONS``: XLA hands
convolutions, dots and reductions to YNNPACK by default, and YNNPACK's convolutions (the 3x3
and 7x7 layers of the ResNets and their gradients) are slower than XLA's own Eigen
convolutions. Leaving convolutions out of the YNNPACK list, and keeping its dots and
reductions, took ResNet-50's forward + backward at batch 8, 384 x 128 from 1.28 to 1.06 s
(``benchmarks/ssan_step_parts.py``; RESULTS.md, "SSAN train step"). A task adds its own options through its
optional ``compiler_options(config, backend)`` hook (rematerialisation on CPU needs
``CPU_REMAT_OPTIONS``). Other platforms get only the task's options.
"""

from typing import Any

import jax

# YNNPACK fusion kinds XLA:CPU may form: its default list without INDIVIDUAL_CONVOLUTION.
# (A repeated enum field of XLA's DebugOptions, given as comma-separated value names.)
CPU_CONVOLUTION_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}

# XLA:CPU expands jax.checkpoint's optimization barriers early ('cse_barrier_expander') and
# CSE then merges the recomputation back into the forward pass, so remat outside a scan
# saves nothing on CPU (measured: the ResNet-50 step even grows) unless that pass is skipped.
CPU_REMAT_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"}


def train_step_options(task: Any, config: Any, backend: str | None = None) -> dict | None:
    """The options to compile `task`'s train step with.

    Args:
      task: a task module; its optional `compiler_options(config, backend)` adds options.
      config: the run's config.
      backend: platform the step compiles for; `jax.default_backend()` when None.

    Returns:
      A new dict for `jax.jit(..., compiler_options=...)` or `lowered.compile(...)`, or None
      when there are none (GPUs and TPUs without task options).
    """
    backend = backend or jax.default_backend()
    hook = getattr(task, "compiler_options", None)
    options = dict(CPU_CONVOLUTION_OPTIONS) if backend == "cpu" else {}
    options.update((hook(config, backend) if hook else None) or {})
    return options or None
