"""Run the speed benchmark as a script: ``python bench/bench.py [options]``.

The same as ``hogwild bench [options]`` (see ``docs/bench.md``); the measurements live in
the package ``src/hogwild/bench/``. Example (small and quick)::

    python bench/bench.py --workers 1,2 --contexts 128 --passes 3 --dtypes float32
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from hogwild.cli import app
except ImportError:  # not installed: run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from hogwild.cli import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]], prog_name="bench.py")
