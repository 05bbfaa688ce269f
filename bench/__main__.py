"""`python -m bench [name ...]`: run every bench/bench_*.py (or the named ones).

Each module has `main() -> dict` which measures, writes bench/results/<name>.json through
bench.results.write and returns the result. Benchmarks are not tests: they never run in
`make test`, and their targets are checked by reading the results, not by assertions.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = argv or sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== {name}", flush=True)
        result = module.main()
        print(json.dumps(result, indent=2, sort_keys=True, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
