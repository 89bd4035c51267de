"""Private RabbitMQ and PostgreSQL instances for fault tests: stopped, killed and restarted for
real without disturbing the shared services the rest of the suite uses.

Each instance runs from the Debian packages ``.ci/services.sh`` installs, on free loopback ports,
with its data in a temporary directory, and is stopped (by its own pid) when the context ends.

    with rabbitmq_instance() as broker, postgres_instance() as database:
        ...                       # broker.url, database.url
        broker.restart(downtime=3.0)
        database.kill()           # SIGKILL, as a crash; database.start() brings it back
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from .environment import inherited
from .processes import free_port
from .services import unavailable

__all__ = ["ServiceInstance", "postgres_instance", "rabbitmq_instance"]

START_TIMEOUT = 60.0
RUNUSER = "/usr/sbin/runuser"  # util-linux: the servers refuse to run as root


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait(what: str, ready: bool, port: int, log: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(port) == ready:
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise TimeoutError(f"{what} did not {'start' if ready else 'stop'} in {timeout} s\n{tail}")


@dataclass
class ServiceInstance:
    """One private server. ``start``/``stop`` are clean; ``kill`` is a crash (SIGKILL)."""

    kind: str
    port: int
    url: str
    directory: Path
    _start: list[str]
    _env: dict[str, str]
    _pid_file: Path
    _user: str
    _log: Path
    _stop: list[str] = field(default_factory=list)
    _crash: list[str] = field(default_factory=list)
    """A crash that the server can recover from (PostgreSQL: ``pg_ctl -m immediate``);
    empty: SIGKILL to the server's process."""
    _ready: list[str] = field(default_factory=list)
    """A command that succeeds once the server takes work (empty: its port answers)."""
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start in the foreground of a child of ours (its pid file names the server)."""
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed server binaries
                [RUNUSER, "-u", self._user, "--", *self._start],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait(self.kind, True, self.port, self._log)
        deadline = time.monotonic() + START_TIMEOUT
        while self._ready and not self._succeeds(self._ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} answers but is not ready")
            time.sleep(0.1)

    @staticmethod
    def _succeeds(argv: list[str]) -> bool:
        done = subprocess.run(argv, capture_output=True, check=False)  # noqa: S603 - pg_isready
        return done.returncode == 0

    def pid(self) -> int | None:
        with suppress(OSError, ValueError, IndexError):
            pid = int(self._pid_file.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        return None

    def stop(self) -> None:
        """A clean shutdown (what an administrator's restart does)."""
        if self.pid() is not None:
            self._run(self._stop)
        self._await_exit()

    def kill(self) -> None:
        """A crash: ``pg_ctl -m immediate`` for PostgreSQL, SIGKILL for RabbitMQ."""
        pid = self.pid()
        if pid is not None and self._crash:
            self._run(self._crash)
        elif pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._await_exit()

    def _run(self, argv: list[str]) -> None:
        subprocess.run(  # noqa: S603 - fixed server binaries
            [RUNUSER, "-u", self._user, "--", *argv],
            env=self._env,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def restart(self, downtime: float = 0.0, *, crash: bool = False) -> None:
        self.kill() if crash else self.stop()
        time.sleep(downtime)
        self.start()

    def _await_exit(self) -> None:
        _wait(self.kind, False, self.port, self._log, timeout=30)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)  # our own session: its wrappers
                self._proc.wait(timeout=10)
            self._proc = None


def _tool(pattern: str, what: str) -> str:
    found = sorted(glob.glob(pattern))
    if not found:
        unavailable(f"needs {what} ({pattern}); .ci/services.sh installs it")
    return found[-1]


@contextmanager
def _instance(kind: str, user: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=f"asya-{kind}-"))
    shutil.chown(directory, user, user)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _running(instance: ServiceInstance) -> Iterator[None]:
    try:
        instance.start()
        yield
    finally:
        instance.kill()


@contextmanager
def rabbitmq_instance() -> Iterator[ServiceInstance]:
    """A RabbitMQ node of its own (own name, ports, data), user ``guest`` from loopback."""
    server = _tool("/usr/sbin/rabbitmq-server", "RabbitMQ's rabbitmq-server")
    ctl = _tool("/usr/sbin/rabbitmqctl", "RabbitMQ's rabbitmqctl")
    port, dist = free_port(), free_port()
    node = f"asya-test-{port}@localhost"
    with _instance("rabbitmq", "rabbitmq") as directory:
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{port}\n"
            "distribution.listener.interface = 127.0.0.1\n"
            "loopback_users.guest = false\n"
        )
        (directory / "enabled_plugins").write_text("[].\n")
        for path in directory.iterdir():
            shutil.chown(path, "rabbitmq", "rabbitmq")
        env = inherited(
            HOME=str(directory),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=node,
            RABBITMQ_DIST_PORT=str(dist),
            RABBITMQ_CONFIG_FILE=str(directory / "rabbitmq.conf"),
            RABBITMQ_MNESIA_BASE=str(directory / "mnesia"),
            RABBITMQ_LOG_BASE=str(directory / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(directory / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(directory / "pid"),
            RABBITMQ_CONF_ENV_FILE="/dev/null",
        )
        broker = ServiceInstance(
            kind=f"RabbitMQ node {node}",
            port=port,
            url=f"amqp://guest:guest@127.0.0.1:{port}/",
            directory=directory,
            _start=[server],
            _stop=[ctl, "-n", node, "-q", "stop"],
            _env=env,
            _pid_file=directory / "pid",
            _user="rabbitmq",
            _log=directory / "server.log",
        )
        with _running(broker):
            yield broker


@contextmanager
def postgres_instance() -> Iterator[ServiceInstance]:
    """A PostgreSQL cluster of its own: database ``postgres``, user ``asya``, trust on loopback."""
    bin_dir = Path(_tool("/usr/lib/postgresql/*/bin/postgres", "PostgreSQL's server")).parent
    port = free_port()
    with _instance("postgres", "postgres") as directory:
        data = directory / "data"
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "asya", "--auth=trust"]
        subprocess.run(  # noqa: S603 - fixed server binaries
            [RUNUSER, "-u", "postgres", "--", *initdb, "-E", "UTF8", "--no-sync"],
            capture_output=True,
            timeout=120,
            check=True,
        )
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {directory} -c max_connections=200"
        database = ServiceInstance(
            kind=f"PostgreSQL on port {port}",
            port=port,
            url=f"postgresql://asya@127.0.0.1:{port}/postgres",
            directory=directory,
            _start=[str(bin_dir / "postgres"), "-D", str(data), *options.split()],
            _stop=[str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            _ready=[str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            _crash=[str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            _env=inherited(LC_ALL="C.UTF-8"),
            _pid_file=data / "postmaster.pid",
            _user="postgres",
            _log=directory / "server.log",
        )
        with _running(database):
            yield database
