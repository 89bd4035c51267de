"""A real Kubernetes API server for tests, the way controller-runtime's envtest runs one.

``etcd`` and ``kube-apiserver`` come from ``KUBEBUILDER_ASSETS`` (see
``scripts/envtest-assets.sh``). They listen on free loopback ports, with a throw-away CA, a
serving certificate, a client certificate in ``system:masters`` and a service-account signing
key; authorization is RBAC and the ``ServiceAccount`` admission plugin is off (no controllers run
to create tokens). Everything is stopped and removed in ``finally``.
"""

from __future__ import annotations

import datetime
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .environment import ASSETS_ENV, current
from .processes import free_port, stop_process

__all__ = ["ControlPlane", "assets_dir", "control_plane", "free_port", "helm_template"]


def assets_dir() -> Path | None:
    """The envtest assets directory if it holds both binaries, else None."""
    raw = current().kubebuilder_assets
    if not raw:
        return None
    path = Path(raw)
    if (path / "kube-apiserver").is_file() and (path / "etcd").is_file():
        return path
    return None


def helm_template(
    chart: Path, *extra: str, namespace: str = "default", kube_version: str = "1.36.3"
) -> list[dict[str, Any]]:
    """``helm template`` of ``chart`` with the helm from the envtest assets, as documents.
    Skips (fails under CI) when the assets have no helm."""
    import yaml  # noqa: PLC0415 - optional dependency (extra "kube")

    from .services import unavailable  # noqa: PLC0415

    assets = assets_dir()
    if assets is None or not (assets / "helm").is_file():
        unavailable(f"{ASSETS_ENV} with helm is not set (bash scripts/envtest-assets.sh)")
    out = subprocess.run(  # noqa: S603 - our helm, our chart
        [
            str(assets / "helm"),
            "template",
            "asya",
            str(chart),
            "--namespace",
            namespace,
            "--kube-version",
            kube_version,
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@dataclass(frozen=True)
class ControlPlane:
    host: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    workdir: Path

    def kubeconfig(self) -> Path:
        """A kubeconfig file for kubectl, helm and friends."""
        path = self.workdir / "kubeconfig"
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: envtest\n  cluster:\n    server: {self.host}\n"
            f"    certificate-authority: {self.ca_file}\n"
            f"users:\n- name: admin\n  user:\n    client-certificate: {self.cert_file}\n"
            f"    client-key: {self.key_file}\n"
            "contexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\n"
            "current-context: envtest\n"
        )
        return path


def _write_pki(directory: Path) -> dict[str, Path]:
    from cryptography import x509  # noqa: PLC0415 - optional dependency (extra "kube")
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    now = datetime.datetime.now(datetime.UTC)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def save_key(name: str, k: rsa.RSAPrivateKey) -> Path:
        path = directory / name
        path.write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        return path

    def save_cert(name: str, cert: x509.Certificate) -> Path:
        path = directory / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asya-envtest-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, org: str | None, server: bool) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        k = key()
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_name)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if server:
            import ipaddress  # noqa: PLC0415

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return builder.sign(ca_key, hashes.SHA256()), k

    serving, serving_key = leaf("localhost", None, server=True)
    client, client_key = leaf("asya-envtest-admin", "system:masters", server=False)
    sa_key = key()
    sa_pub = directory / "sa.pub"
    sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return {
        "ca": save_cert("ca.crt", ca),
        "serving_cert": save_cert("apiserver.crt", serving),
        "serving_key": save_key("apiserver.key", serving_key),
        "client_cert": save_cert("client.crt", client),
        "client_key": save_key("client.key", client_key),
        "sa_key": save_key("sa.key", sa_key),
        "sa_pub": sa_pub,
    }


def _start(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(  # noqa: S603 - binaries from the envtest assets directory
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _ready(host: str, pki: dict[str, Path]) -> bool:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    context.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    try:
        with urllib.request.urlopen(f"{host}/readyz", context=context, timeout=2) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


@contextmanager
def control_plane(assets: Path, *, ready_timeout: float = 90.0) -> Iterator[ControlPlane]:
    """Start etcd and kube-apiserver from ``assets``; yield how to reach the API server."""
    workdir = Path(tempfile.mkdtemp(prefix="asya-envtest-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        pki = _write_pki(workdir)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd = _start(
            [
                str(assets / "etcd"),
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
            ],
            workdir / "etcd.log",
        )
        stack.callback(stop_process, etcd)
        host = f"https://127.0.0.1:{api_port}"
        apiserver = _start(
            [
                str(assets / "kube-apiserver"),
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--client-ca-file={pki['ca']}",
                f"--tls-cert-file={pki['serving_cert']}",
                f"--tls-private-key-file={pki['serving_key']}",
                f"--service-account-key-file={pki['sa_pub']}",
                f"--service-account-signing-key-file={pki['sa_key']}",
                f"--service-account-issuer={host}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                f"--cert-dir={workdir / 'certs'}",
            ],
            workdir / "apiserver.log",
        )
        stack.callback(stop_process, apiserver)
        deadline = time.monotonic() + ready_timeout
        while not _ready(host, pki):
            for name, proc in (("etcd", etcd), ("kube-apiserver", apiserver)):
                if proc.poll() is not None:
                    log = (workdir / f"{'etcd' if name == 'etcd' else 'apiserver'}.log").read_text()
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log[-4000:]}")
            if time.monotonic() > deadline:
                log = (workdir / "apiserver.log").read_text()
                raise TimeoutError(f"kube-apiserver not ready in {ready_timeout}s:\n{log[-4000:]}")
            time.sleep(0.2)
        yield ControlPlane(
            host=host,
            ca_file=pki["ca"],
            cert_file=pki["client_cert"],
            key_file=pki["client_key"],
            workdir=workdir,
        )
