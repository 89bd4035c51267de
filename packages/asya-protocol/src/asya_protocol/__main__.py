"""``python -m asya_protocol schema``: print the JSON Schemas of the wire messages."""

from __future__ import annotations

import argparse
import sys

import msgspec

from .schema import schemas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asya-protocol", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    schema = sub.add_parser("schema", help="print JSON Schemas (envelope, runtime messages)")
    schema.add_argument("which", nargs="?", choices=["all", "envelope", "runtime"], default="all")
    args = parser.parse_args(argv)
    if args.command == "schema":
        doc = schemas()
        out = doc if args.which == "all" else doc[args.which]
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(out), indent=2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
