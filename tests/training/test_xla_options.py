"""The train step's XLA options: what each platform gets, and that XLA:CPU honours them."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from reid_jax.training import xla_options
from reid_jax.training.tasks import alignedreid, ssan


def _ssan_config(remat):
    return ml_collections.ConfigDict(dict(model=dict(remat=remat)))


def test_cpu_gets_convolution_options_and_the_task_adds_its_own():
    assert xla_options.train_step_options(alignedreid, None, "cpu") == (
        xla_options.CPU_CONVOLUTION_OPTIONS
    )
    assert xla_options.train_step_options(ssan, _ssan_config("none"), "cpu") == (
        xla_options.CPU_CONVOLUTION_OPTIONS
    )
    assert xla_options.train_step_options(ssan, _ssan_config("all"), "cpu") == {
        **xla_options.CPU_CONVOLUTION_OPTIONS,
        **xla_options.CPU_REMAT_OPTIONS,
    }
    assert xla_options.train_step_options(ssan, _ssan_config("all"), "gpu") is None
    assert xla_options.train_step_options(alignedreid, None, "tpu") is None
    options = xla_options.train_step_options(alignedreid, None, "cpu")
    options["extra"] = "x"  # a new dict each call
    assert "extra" not in xla_options.CPU_CONVOLUTION_OPTIONS


def _ynn_fused_ops(hlo: str) -> set[str]:
    """Opcodes inside the computations that YNNPACK fusions call."""
    bodies = dict(re.findall(r"\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S))
    ops = set()
    for name in re.findall(r"calls=%([\w.\-]+)[^\n]*__ynn_fusion", hlo):
        ops |= set(re.findall(r"= \S+ (\w+)\(", bodies.get(name, "")))
    return ops


def test_xla_cpu_keeps_convolutions_out_of_ynnpack_and_dots_in():
    def layer(x, kernel, weights):
        y = lax.conv_general_dilated(
            x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y, x.reshape(-1, 32) @ weights  # a convolution and a dot, each on its own

    args = (jnp.ones((4, 16, 16, 32)), jnp.ones((3, 3, 32, 64)) / 300, jnp.ones((32, 128)))
    default = jax.jit(layer).lower(*args).compile()
    ours = jax.jit(layer, compiler_options=xla_options.CPU_CONVOLUTION_OPTIONS)
    compiled = ours.lower(*args).compile()
    assert "convolution" in _ynn_fused_ops(default.as_text())  # what the option changes
    fused = _ynn_fused_ops(compiled.as_text())
    assert "convolution" not in fused and "dot" in fused
    for got, want in zip(compiled(*args), default(*args), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5)
