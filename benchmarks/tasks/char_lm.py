"""A character-level transformer language model on Tiny Shakespeare."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.tasks._common import SPLIT_SEED
from benchmarks.tasks._task import Task

DATA = pathlib.Path(__file__).parents[1] / "data" / "tinyshakespeare.txt"
CONTEXT = 32
BATCH_SIZE = 16
NUM_EVAL_WINDOWS = 64


class Block(nn.Module):
  """A pre-norm transformer block with causal self-attention."""

  num_heads: int

  @nn.compact
  def __call__(self, x):
    batch, length, width = x.shape
    head = width // self.num_heads
    qkv = nn.Dense(3 * width)(nn.LayerNorm()(x))
    q, k, v = jnp.split(qkv.reshape(batch, length, 3 * self.num_heads, head), 3, 2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head)
    causal = jnp.tril(jnp.ones((length, length), bool))
    weights = jax.nn.softmax(jnp.where(causal, logits, -1e9), axis=-1)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(x.shape)
    x = x + nn.Dense(width)(attended)
    hidden = nn.gelu(nn.Dense(4 * width)(nn.LayerNorm()(x)))
    return x + nn.Dense(width)(hidden)


class Transformer(nn.Module):
  """A decoder-only transformer over characters."""

  vocab_size: int
  width: int = 48
  depth: int = 2
  num_heads: int = 4
  context: int = CONTEXT  # the longest input

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab_size, self.width)(tokens)
    position = self.param(
      "position", nn.initializers.normal(0.02), (self.context, self.width)
    )
    x = x + position[: tokens.shape[1]]
    for _ in range(self.depth):
      x = Block(self.num_heads)(x)
    return nn.Dense(self.vocab_size)(nn.LayerNorm()(x))


def language_model_task(
  name: str,
  description: str,
  ids: np.ndarray,
  model: Transformer,
  *,
  batch_size: int,
  rng: np.random.Generator,
  steps: int,
) -> Task:
  """Next-character prediction with ``model`` on the characters ``ids``
  (integers below ``model.vocab_size``): the first 90% train, windows of the
  rest test; ``rng`` draws the fixed windows of the train and test losses.
  The metric is the test loss in nats per character."""
  context = model.context
  ids = ids.astype(np.int32)
  num_train = int(0.9 * len(ids))
  train, heldout = jnp.asarray(ids[:num_train]), jnp.asarray(ids[num_train:])
  offsets = jnp.arange(context + 1)  # inputs, and the next characters

  def fixed_windows(text):
    starts = rng.integers(0, len(text) - context - 1, NUM_EVAL_WINDOWS)
    return text[jnp.asarray(starts)[:, None] + offsets]

  def loss(params, windows):
    logits = model.apply({"params": params}, windows[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(
      logits, windows[:, 1:]
    ).mean()

  def sample(key, text):
    starts = jax.random.randint(key, (batch_size,), 0, len(text) - context - 1)
    return text[starts[:, None] + offsets]

  return Task(
    name=name,
    description=description,
    init=lambda key: model.init(key, train[None, :context])["params"],
    loss=loss,
    sample=sample,
    train=train,
    train_eval=fixed_windows(train),
    test=fixed_windows(heldout),
    metric=loss,
    metric_name="test_loss",
    higher_is_better=False,
    steps=steps,
  )


def task() -> Task:
  vocab, ids = np.unique(
    np.frombuffer(DATA.read_bytes(), np.uint8), return_inverse=True
  )
  return language_model_task(
    "char_lm",
    f"Transformer (2 blocks, width 48, 4 heads) on Tiny Shakespeare "
    f"characters, context {CONTEXT}, batch {BATCH_SIZE}.",
    ids,
    Transformer(len(vocab)),
    batch_size=BATCH_SIZE,
    rng=np.random.default_rng(SPLIT_SEED),
    steps=1500,
  )
