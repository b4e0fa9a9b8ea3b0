r"""Trains an MLP with GARO, data- and model-parallel over a mesh of devices.

On a CPU-only machine this simulates 8 devices (unless ``XLA_FLAGS`` already
sets a count); with accelerators it uses them as they are. The mesh has a
``data`` axis and a ``model`` axis. The batch is split over ``data``; each
weight matrix is split over both axes (tensor parallel over ``model``, FSDP
over ``data``), so a device holds 1/8 of each, and, because GARO's momentum
buffers are sharded like the params, 1/8 of their optimizer state too. The
GRU's hidden state and the hyperparameters are a few replicated floats.

The data are scikit-learn's bundled digits. The script prints the loss, test
accuracy and GARO's hyperparameters as it trains, then where every array of
the params and of the optimizer state lives.

Usage::

  python examples/sharded_train.py [--mesh 4 2] [--steps 300]
      [--granularity global|per_leaf] [--axis-types explicit|auto]

As two processes of 4 devices each (``jax.distributed``), on one machine::

  export XLA_FLAGS=--xla_force_host_platform_device_count=4
  python examples/sharded_train.py --coordinator localhost:1234 \
      --num-processes 2 --process-id 1 > /dev/null &
  python examples/sharded_train.py --coordinator localhost:1234 \
      --num-processes 2 --process-id 0
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  )

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, reshard
from jax.sharding import PartitionSpec as P
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import garo_optax

HIDDEN = 256
# Megatron-style, the first layer splits its outputs over `model` and the second
# its inputs; FSDP splits each matrix over `data` as well (the second one on the
# same dimension: its other one, 10 classes, is too small to split).
PARAM_SPECS = {
  "hidden": {"kernel": P("data", "model"), "bias": P("model")},
  "out": {"kernel": P(("model", "data"), None), "bias": P()},
}


def init_params(key: jax.Array) -> dict:
  k1, k2 = jax.random.split(key)
  return {
    "hidden": {
      "kernel": jax.random.normal(k1, (64, HIDDEN)) / 8.0,
      "bias": jnp.zeros(HIDDEN),
    },
    "out": {
      "kernel": jax.random.normal(k2, (HIDDEN, 10)) / HIDDEN**0.5,
      "bias": jnp.zeros(10),
    },
  }


def logits_fn(params, x):
  # FSDP: gather each matrix over `data` for its matmul, keep `model` split.
  w1 = _gather(params["hidden"]["kernel"], P(None, "model"))
  w2 = _gather(params["out"]["kernel"], P("model", None))
  hidden = jax.nn.relu(x @ w1 + params["hidden"]["bias"])
  # Row-parallel: each device's partial products are summed over `model`; the
  # logits keep the batch's sharding.
  batch_spec = P(_spec(x)[0], None) if _spec(x) else None
  logits = jnp.matmul(hidden, w2, out_sharding=batch_spec)
  return logits + params["out"]["bias"]


def _spec(x: jax.Array) -> P | None:
  """The partition spec in ``x``'s type, if its mesh axes are explicit."""
  sharding = jax.typeof(x).sharding
  return sharding.spec if sharding.mesh.are_all_axes_explicit else None


def _gather(x: jax.Array, spec: P) -> jax.Array:
  """``x`` resharded to ``spec``: in its type (explicit axes), or as a hint."""
  if _spec(x) is not None:
    return reshard(x, spec)
  return jax.lax.with_sharding_constraint(x, spec)


def loss_fn(params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()


def describe(tree) -> list[str]:
  """One line per array: path, shape, partition spec, shape held by each device."""
  lines = []
  for path, x in jax.tree.leaves_with_path(tree):
    spec = x.sharding.spec if isinstance(x.sharding, NamedSharding) else "-"
    shard = x.sharding.shard_shape(x.shape)
    lines.append(
      f"  {jax.tree_util.keystr(path):<48} {x.dtype.name:<8}"
      f"{x.shape!s:<12} {spec!s:<26} per device {shard}"
    )
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--mesh", type=int, nargs=2, default=(4, 2), metavar=("DATA", "MODEL")
  )
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--granularity", default="global")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--axis-types",
    choices=("explicit", "auto"),
    default="explicit",
    help="mesh axes: explicit (shardings in the arrays' types; GARO then sums "
    "each device's shards and all-reduces once) or auto (shardings given to jit)",
  )
  parser.add_argument(
    "--coordinator", help="host:port of process 0, to run as one of several"
  )
  parser.add_argument("--num-processes", type=int, default=1)
  parser.add_argument("--process-id", type=int, default=0)
  args = parser.parse_args()
  if args.coordinator:
    # CPU devices of different processes talk through gloo; GPUs and TPUs
    # need no such setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  # Every process runs this same program; one of them reports.
  log = print if jax.process_index() == 0 else lambda *_: None

  axis_type = AxisType.Explicit if args.axis_types == "explicit" else AxisType.Auto
  mesh = jax.make_mesh(tuple(args.mesh), ("data", "model"), axis_types=(axis_type,) * 2)
  log(
    f"{jax.device_count()} devices in {jax.process_count()} process(es), "
    f"mesh {dict(mesh.shape)}, {args.axis_types} axes"
  )
  with jax.set_mesh(mesh):
    train(args, mesh, log)


def train(args, mesh, log):
  """Trains on ``mesh``; the same code serves explicit and auto axes."""
  replicated = NamedSharding(mesh, P())
  param_sharding = jax.tree.map(
    lambda spec: NamedSharding(mesh, spec),
    PARAM_SPECS,
    is_leaf=lambda x: isinstance(x, P),
  )
  batch_sharding = (
    NamedSharding(mesh, P("data", None)),
    NamedSharding(mesh, P("data")),
  )

  tx = garo_optax.garo(
    learning_rate=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    granularity=args.granularity,
  )
  # Initialise straight into the shards: no device ever holds a full copy.
  params = jax.jit(init_params, out_shardings=param_sharding)(jax.random.key(args.seed))
  # GARO's state: `mu` like the params, the rest (a few floats) replicated.
  abstract_state = jax.eval_shape(tx.init, params)
  state_sharding = jax.tree.map(lambda _: replicated, abstract_state)._replace(
    mu=param_sharding
  )
  state = jax.jit(tx.init, out_shardings=state_sharding)(params)

  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params, value=loss)
    return optax.apply_updates(params, updates), state, loss

  step = jax.jit(
    step,
    in_shardings=(param_sharding, state_sharding, *batch_sharding),
    out_shardings=(param_sharding, state_sharding, replicated),
    donate_argnums=(0, 1),
  )
  accuracy = jax.jit(
    lambda params, x, y: jnp.mean(jnp.argmax(logits_fn(params, x), -1) == y)
  )

  digits = load_digits()
  x_train, x_test, y_train, y_test = train_test_split(
    (digits.data / 16.0).astype(np.float32),
    digits.target.astype(np.int32),
    test_size=0.25,
    random_state=args.seed,
  )
  x_test, y_test = (
    jax.make_array_from_process_local_data(replicated, a) for a in (x_test, y_test)
  )
  # Each process draws its own share of every batch.
  rng = np.random.default_rng((args.seed, jax.process_index()))
  local_batch = args.batch_size // jax.process_count()
  log(
    f"{'step':>5} | {'loss':>7} | {'test acc':>8} | {'lr':>8} | "
    f"{'momentum':>8} | {'wd':>8}"
  )
  for i in range(1, args.steps + 1):
    index = rng.integers(0, len(x_train), local_batch)
    x, y = (
      jax.make_array_from_process_local_data(sharding, a[index])
      for sharding, a in zip(batch_sharding, (x_train, y_train), strict=True)
    )
    params, state, loss = step(params, state, x, y)
    if i % 50 == 0 or i == 1:
      # Per-leaf granularity gives one value per group: print their mean.
      hp = {
        k: float(np.mean(jax.tree.leaves(v)))
        for k, v in garo_optax.hyperparams(state).items()
      }
      log(
        f"{i:>5} | {float(loss):7.4f} | "
        f"{float(accuracy(params, x_test, y_test)):8.3f} | "
        f"{hp['learning_rate']:8.4f} | {hp['momentum']:8.4f} | "
        f"{hp['weight_decay']:8.2g}"
      )

  log("\nparams")
  log("\n".join(describe(params)))
  log("\noptimizer state (GaroState)")
  log("\n".join(describe(state)))


if __name__ == "__main__":
  main()
