"""Copies generated benchmark tables into README.md and benchmarks/README.md.

The README's result tables are not typed by hand: each sits between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` markers and is
replaced by the markdown file ``benchmarks/results/NAME.md`` (minus its
title line) that the benchmark wrote.

Usage::

  python -m benchmarks.readme            # after running the benchmarks
  python -m benchmarks.readme --check    # exit 1 if README.md is out of date
"""

import argparse
import pathlib
import re
import sys

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


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.readme",
    description=(
      "Copies the tables in benchmarks/results/NAME.md into README.md, between "
      "its <!-- results:NAME --> markers. Run it after the benchmarks."
    ),
  )
  parser.add_argument(
    "--readme",
    type=pathlib.Path,
    nargs="+",
    default=[ROOT / "README.md", ROOT / "benchmarks" / "README.md"],
    help="the files to fill (default: README.md and benchmarks/README.md)",
  )
  parser.add_argument(
    "--check",
    action="store_true",
    help="write nothing; exit with status 1 if the README is out of date",
  )
  args = parser.parse_args(argv)
  stale = []
  for path in args.readme:
    text = path.read_text()
    filled = fill(text)
    if filled == text:
      print(f"{path} is up to date")
    elif args.check:
      print(f"{path} is out of date")
      stale.append(path)
    else:
      path.write_text(filled)
      print(f"Updated {path}")
  sys.exit(1 if stale else 0)


if __name__ == "__main__":
  main()
