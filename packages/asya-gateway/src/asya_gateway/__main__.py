"""Entry point of asya-gateway. The component is not built yet: it says so and exits 2."""

from __future__ import annotations

import sys


def main() -> int:
    sys.stderr.write("asya-gateway: this component is not implemented yet in this release\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
