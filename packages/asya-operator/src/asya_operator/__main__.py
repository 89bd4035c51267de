"""``asya-operator`` / ``python -m asya_operator``.

``asya-operator run`` runs the controller (in a pod, or against the current kubeconfig);
``asya-operator crd`` prints the Asya CustomResourceDefinition.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from asya_protocol import signals as _signals
from asya_protocol.console import start

from .settings import OperatorSettings

log = logging.getLogger("asya_operator")


async def _run(settings: OperatorSettings) -> int:
    from kubernetes_asyncio import client, config  # noqa: PLC0415

    from .controller import Controller  # noqa: PLC0415
    from .kubeclient import KubeClient  # noqa: PLC0415
    from .leader import LeaderElector  # noqa: PLC0415
    from .queues import QueueManager  # noqa: PLC0415

    stop = asyncio.Event()
    _signals.attach(stop)
    if settings.in_cluster:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config()
    async with client.ApiClient() as api:
        kube = KubeClient(api)
        queues = QueueManager(settings.rabbitmq_url)
        elector = LeaderElector(
            kube, settings.namespace, settings.identity, duration=settings.lease_duration
        )
        held = False
        try:
            if settings.leader_election:
                log.info(
                    "%s waiting for the lease %s/asya-operator",
                    settings.identity,
                    settings.namespace,
                )
                waiter = asyncio.ensure_future(elector.acquire())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for f in (waiter, stopper):
                    f.cancel()
                await asyncio.gather(waiter, stopper, return_exceptions=True)
                if stop.is_set():
                    return 0
                waiter.result()  # an API error while waiting ends the process (it restarts)
                held = True
            controller = Controller(
                kube,
                queues,
                namespaces=settings.watch_namespaces,
                resync=settings.resync,
                workers=settings.workers,
            )
            lost = asyncio.Event()

            async def keep_lease() -> None:
                if settings.leader_election:
                    await elector.hold()
                    lost.set()
                    stop.set()

            async with asyncio.TaskGroup() as tg:
                holder = tg.create_task(keep_lease())
                log.info(
                    "reconciling Asya resources in %s",
                    ", ".join(settings.watch_namespaces) or "all namespaces",
                )
                await controller.run(stop)
                holder.cancel()
            return 1 if lost.is_set() else 0
        finally:
            await queues.close()
            if held:  # stopped while waiting for the lease: there is nothing to give up
                await elector.release()


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
