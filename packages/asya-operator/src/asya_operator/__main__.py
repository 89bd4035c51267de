"""``asya-operator`` / ``python -m asya_operator``.

``asya-operator run`` runs the controller (in a pod, or against the current kubeconfig);
``asya-operator crd`` prints the Asya CustomResourceDefinition.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from asya_protocol import signals as _signals
from asya_protocol.console import start

from .settings import OperatorSettings


async def _run(settings: OperatorSettings) -> int:
    from kubernetes_asyncio import client, config  # noqa: PLC0415

    from .runner import Operator  # noqa: PLC0415

    stop = asyncio.Event()
    _signals.attach(stop)
    if settings.in_cluster:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config()
    async with client.ApiClient() as api:
        return await Operator(settings, api).run(stop)


def _print_crd() -> int:
    from .crd import crd_yaml  # noqa: PLC0415

    sys.stdout.write(crd_yaml())
    return 0


def main(argv: list[str] | None = None) -> int:
    with _signals.honoured():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="asya-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the controller")
    sub.add_parser("crd", help="print the Asya CustomResourceDefinition as YAML")
    args = parser.parse_args(argv)
    if args.command == "crd":
        return _print_crd()
    settings = start("asya-operator", OperatorSettings)
    return asyncio.run(_run(settings))


if __name__ == "__main__":
    raise SystemExit(main())
