"""Copies generated benchmark tables into README.md.

The README's result tables are not typed by hand: each sits between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` markers and is
replaced by the markdown file ``benchmarks/results/NAME.md`` (minus its
title line) that the benchmark wrote.

Usage::

  python -m benchmarks.readme            # after running the benchmarks
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def fill(readme: str) -> str:
  """Returns ``readme`` with every marked block replaced by its results file."""

  def replace(match: re.Match) -> str:
    name = match.group(1)
    path = RESULTS / f"{name}.md"
    if not path.exists():
      raise FileNotFoundError(f"README block {name!r} needs {path}; run its benchmark")
    body = path.read_text().strip().split("\n")
    if body and body[0].startswith("# "):
      body = body[1:]
    # The README's own sections are level 2: demote the file's headings below.
    body = [f"####{line[2:]}" if line.startswith("## ") else line for line in body]
    return (
      f"<!-- results:{name} -->\n"
      + "\n".join(body).strip()
      + f"\n<!-- /results:{name} -->"
    )

  return re.sub(
    r"<!-- results:(\S+) -->.*?<!-- /results:\1 -->", replace, readme, flags=re.S
  )


def main() -> None:
  path = ROOT / "README.md"
  path.write_text(fill(path.read_text()))
  print(f"Updated {path}")


if __name__ == "__main__":
  main()
