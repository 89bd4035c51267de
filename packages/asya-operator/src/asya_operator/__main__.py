"""``asya-operator`` / ``python -m asya_operator``.

``asya-operator crd`` prints the Asya CRD (YAML). Running the controller is not built yet.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asya-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("crd", help="print the Asya CustomResourceDefinition as YAML")
    args = parser.parse_args(argv)
    if args.command == "crd":
        from .crd import crd_yaml  # noqa: PLC0415

        sys.stdout.write(crd_yaml())
        return 0
    sys.stderr.write("asya-operator: the controller is not implemented yet in this release\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
