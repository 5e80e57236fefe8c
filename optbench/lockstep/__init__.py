"""Many cells in one pass: K cells of one shape trained in lockstep (`engine`), on the CPU
(`cpu`: one parallel region per step, a thread per model) or as CUDA kernels (`cuda`).

    from optbench.lockstep import run_group, plan
    for group in plan(cells, max_members=64):
        for result in run_group(group, device="cpu"):   # Results as members finish
            ...

`python -m optbench run ... --engine lockstep [--device cpu|cuda]` runs a matrix this
way (`Lockstep`, an executor of optbench.runner's kind).
"""

from optbench.lockstep.engine import DEVICES, GROUP_FIELDS, group_key, plan, run_group

__all__ = ["DEVICES", "GROUP_FIELDS", "group_key", "plan", "run_group"]
