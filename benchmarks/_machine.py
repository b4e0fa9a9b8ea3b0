"""The CPU a benchmark ran on, for the machine record of its results, and
writing those results."""

import json
import pathlib
import platform

import jax


def cpu_model() -> str:
  """The CPU's model name from ``/proc/cpuinfo``, else ``platform.processor()``."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def describe() -> str:
  """``"<JAX device kind>, <CPU model>, jax <version>"``."""
  return f"{jax.devices()[0].device_kind}, {cpu_model()}, jax {jax.__version__}"


def write(out: str | pathlib.Path, record: dict, markdown: str) -> None:
  """Writes ``record`` to ``out.json`` and ``markdown`` to ``out.md``, and
  prints the latter."""
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
  out.with_suffix(".md").write_text(markdown)
  print(markdown)
