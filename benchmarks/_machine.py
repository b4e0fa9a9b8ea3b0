"""The CPU a benchmark ran on, for the machine record of its results."""

import pathlib
import platform


def cpu_model() -> str:
  """The CPU's model name from ``/proc/cpuinfo``, else ``platform.processor()``."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()
