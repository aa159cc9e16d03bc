"""Run every benchmark module (bench/<name>.py with a `main()`), or those named on the command line."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    names = sys.argv[1:] or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_")
    )
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "main"):
            print(f"\n=== bench/{name}.py ===", flush=True)
            module.main()


if __name__ == "__main__":
    main()
