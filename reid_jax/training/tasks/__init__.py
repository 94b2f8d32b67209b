"""Task registry: method name (`config.task`) -> task module (see `tasks/base.py`).

An explicit dict, never an import string; add a method by importing its module here.
"""

from reid_jax.training.tasks import alignedreid, aptm, attribute_joint, ssan

TASKS = {
    "alignedreid": alignedreid,
    "aptm": aptm,
    "attribute_joint": attribute_joint,
    "ssan": ssan,
}
