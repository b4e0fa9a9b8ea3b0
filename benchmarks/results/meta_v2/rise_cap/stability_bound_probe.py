"""Probe: bound the rise of heavy ball's stability quantity lr / (1 + momentum).

garo() moves the effective step lr / (1 - momentum); when the momentum falls at
fixed effective step the learning rate rises, and heavy ball's edge of stability
(lr * curvature < 2 (1 + momentum)) comes closer on both counts. This patches
garo_optax._controller.controller_step so that, for garo, log(lr / (1 + momentum))
rises at most MAX_OFFSET_RISE's 0.05 a step (RISE=0.02 in the environment: 0.02,
for the effective step too): the learning-rate offset's step is lowered by what
the momentum's step adds. From the repository's root:
    python benchmarks/results/meta_v2/rise_cap/stability_bound_probe.py \
        CONTROLLER.npz ...   (diabetes_raw, 5 seeds: peaks over the first, finals)
    python benchmarks/results/meta_v2/rise_cap/stability_bound_probe.py \
        --select CONTROLLER.npz --out X.json   (the ship rule's scoring)
"""

import json
import os
import sys

import jax.numpy as jnp

import garo_optax._controller as c

_bounded_step = c.controller_step


def controller_step(controller, features, hidden, offsets, bias, *, coupled=True):
  hidden, new, values = _bounded_step(
    controller, features, hidden, offsets, bias, coupled=coupled
  )
  if not coupled:
    return hidden, new, values
  bias = jnp.broadcast_to(bias, offsets.shape)
  _, mom_ref, _ = c.heads(bias)
  m0 = jnp.clip(mom_ref + offsets[..., 1], 0.0, c._BELOW_ONE)
  m1 = jnp.clip(mom_ref + new[..., 1], 0.0, c._BELOW_ONE)
  # the rise of log(lr / (1 + m)) that the momentum's step alone makes
  from_momentum = jnp.log((1 - m1) / (1 - m0)) - jnp.log((1 + m1) / (1 + m0))
  limit = offsets[..., 0] + (c.MAX_OFFSET_RISE[0] - from_momentum)
  new = new.at[..., 0].set(jnp.minimum(new[..., 0], limit))
  return hidden, new, c._apply_offsets(new, bias, coupled)


c.controller_step = controller_step
if os.environ.get("RISE"):  # and the effective step's rise with it
  c.MAX_OFFSET_RISE = (float(os.environ["RISE"]), 0.02, 0.05)

if __name__ == "__main__":
  if sys.argv[1] == "--select":
    from benchmarks import select_controller

    select_controller.main(sys.argv[2:])
  else:
    from benchmarks import blowup_trace, optimizers, tasks

    task = tasks.get("diabetes_raw")
    runs = {}
    for p in sys.argv[1:]:
      opt = optimizers.garo_variant(
        "c", "c", controller=p, **optimizers.shipped_defaults("garo")
      )
      runs[p] = [
        blowup_trace.summary(r) for r in blowup_trace.trace(task, opt, range(5), 300)
      ]
      print(
        p,
        [round(r["peak_over_first"], 2) for r in runs[p]],
        [round(r["final_loss"], 1) for r in runs[p]],
        flush=True,
      )
    print(json.dumps(runs, default=float))
