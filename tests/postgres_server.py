"""A real PostgreSQL cluster of its own on a free 127.0.0.1 port, for the live-model tests.

Not a conftest: ``tests/conftest.py`` builds its session-scoped ``postgres`` fixture (one
cluster per pytest process, so one per xdist worker) and the per-test ``postgres_url``
fixture (a fresh, empty database) from :class:`PostgresServer`.

The cluster is built for tests, not for keeping data: ``fsync``, ``synchronous_commit`` and
``full_page_writes`` are off, authentication is ``trust`` and the server listens on
127.0.0.1 only, with its unix socket inside the cluster's temporary directory. It is created
with ``initdb`` from apt's ``postgresql`` package (``make install`` installs it) and removed
again by :meth:`PostgresServer.close`.

``initdb`` and ``postgres`` refuse to run as root (a superuser-owned server process could be
turned against the whole machine). A test run as root (containers, CI images) therefore runs
every PostgreSQL binary as an unprivileged user, the ``postgres`` system user that apt
creates (``nobody`` when there is none), through ``setpriv``, which execs the binary with
that user's ids and no PAM session. The temporary directory is then made that user's, and
it is created directly under the system temp dir: pytest's ``tmp_path`` lives under a
``0700`` directory of root's that the unprivileged user could not enter.

A test process that is SIGKILLed (an xdist worker past its timeout, an OOM kill) never
reaches ``close()``: its ``tidings-pg-*`` directory (tens of MB) stays behind. Each new
``PostgresServer`` first sweeps those (:func:`sweep_stale_clusters`): a directory goes only
when the test process that made it (recorded in its ``owner`` file) is gone and no
postmaster runs in it. A postmaster that outlived its test process is left running: stopping
servers is not a sweep's business, and its directory goes once it is stopped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from uuid import uuid4

import psutil
import psycopg

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))

SUPERUSER = "postgres"
PORT_ATTEMPTS = 3  # a free port can be taken by someone else before postgres binds it
PREFIX = "tidings-pg-"
OWNER_FILE = "owner"  # "<pid> <process start time>" of the test process that made the cluster
# A directory without an owner file (made by an older fixture, or one being made right now)
# is left alone this long after its last change.
UNOWNED_GRACE = 3600.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServerError(RuntimeError):
    """PostgreSQL is missing, initdb failed, or the server never accepted connections."""


def find_bindir() -> Path:
    """The directory of initdb/pg_ctl: ``pg_config --bindir``, else the newest apt install.

    Debian's ``/usr/bin/pg_config`` may come from libpq-dev without a server, so the answer
    is only taken when ``initdb`` is really there.
    """
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=TIMEOUT, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and (Path(out) / "initdb").is_file():
            return Path(out)

    def major(path: str) -> tuple[int, ...]:
        version = Path(path).parent.parent.name
        return tuple(int(p) for p in version.split(".") if p.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major)
    if candidates:
        return Path(candidates[-1]).parent
    raise PostgresServerError(
        "PostgreSQL's initdb was not found (pg_config --bindir, /usr/lib/postgresql/*/bin): "
        "the live-model tests need a real PostgreSQL server. Install it with "
        "`apt-get install -y postgresql` (`make install` does this)."
    )


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Who runs the PostgreSQL binaries: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresServerError(
        "running as root, and there is no `postgres` or `nobody` user to run initdb as"
    )


def _our_uids(user: pwd.struct_passwd | None) -> set[int]:
    """Who owns our cluster directories: us, and the user the binaries run as (root only)."""
    return {os.geteuid()} | ({user.pw_uid} if user is not None else set())


def _process_alive(pid: int, started: float | None = None, name: str | None = None) -> bool:
    """Whether ``pid`` runs and is the process meant: started at ``started`` (a recycled pid
    is another process), or with ``name`` in its name. A process we may not inspect counts
    as alive: nothing of it is ours to remove."""
    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > 1.0:
            return False
        return name is None or name in process.name()
    except psutil.NoSuchProcess:  # zombies included
        return False
    except psutil.AccessDenied:
        return True


def _owner_alive(directory: Path) -> bool | None:
    """Whether the test process that made ``directory`` runs; None when it is not recorded."""
    try:
        pid, started = (directory / OWNER_FILE).read_text().split()
        return _process_alive(int(pid), started=float(started))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return True  # unreadable or garbage: not ours to judge


def _postmaster_running(data: Path) -> bool:
    """Whether a postmaster runs in ``data``: its postmaster.pid names a live postgres."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, IndexError):
        return True  # unreadable, or being written: assume it runs
    return _process_alive(pid, name="postgres")


def sweep_stale_clusters(uids: set[int], tmp: Path | None = None) -> list[Path]:
    """Remove the cluster directories SIGKILLed test processes left in ``tmp`` (the system
    temp dir); returns those removed.

    Only what is certainly dead goes: a real directory (not a symlink) named ``tidings-pg-*``,
    owned by one of ``uids``, whose owner process is gone (or, with no owner recorded,
    untouched for UNOWNED_GRACE), and in which no postmaster runs. Another worker's cluster,
    even one still in initdb, has a live owner.
    """
    removed: list[Path] = []
    for path in Path(tmp or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            info = path.lstat()
        except OSError:
            continue  # swept by another worker meanwhile
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in uids:
            continue
        owner = _owner_alive(path)
        if owner is None:
            owner = time.time() - info.st_mtime < UNOWNED_GRACE
        if owner or _postmaster_running(path / "data"):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


class PostgresServer:
    """One cluster: ``start()`` (initdb + pg_ctl start), ``create_database()``, ``close()``."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.user = _unprivileged_user()
        sweep_stale_clusters(_our_uids(self.user))
        # Short path on purpose: the unix socket's path must fit in 107 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix=PREFIX))
        me = psutil.Process()
        (self.directory / OWNER_FILE).write_text(f"{me.pid} {me.create_time()!r}\n")
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.port = 0
        self._started = False
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)

    # --- addresses ---------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL (psycopg.connect); SQLAlchemy wants ``sqlalchemy_url``."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def sqlalchemy_url(self, dbname: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def django_settings(self, dbname: str) -> dict[str, object]:
        """A ``DATABASES["default"]`` entry for Django's postgresql backend (psycopg 3)."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": dbname,
            "USER": SUPERUSER,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
        }

    # --- running binaries ----------------------------------------------------------------

    def _command(self, name: str, *args: str) -> list[str]:
        command = [str(self.bindir / name), *args]
        if self.user is None:
            return command
        return [
            "setpriv",
            f"--reuid={self.user.pw_uid}",
            f"--regid={self.user.pw_gid}",
            "--init-groups",
            "--",
            *command,
        ]

    def _run(self, name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self.user is not None:
            env["HOME"] = str(self.directory)  # root's HOME is not readable by that user
        return subprocess.run(
            self._command(name, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.directory,  # pg tools complain when they cannot stat their cwd
            check=False,
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """initdb (once), then pg_ctl start on a free port; returns when it accepts queries."""
        if self._started:
            raise PostgresServerError(f"PostgreSQL already running on port {self.port}")
        if not self.data.exists():
            self._initdb()
        last = ""
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            result = self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(4 * TIMEOUT)),
                "-o",  # run through a shell by pg_ctl: hence the quoting
                " ".join(
                    [
                        f"-p {self.port}",
                        "-c listen_addresses=127.0.0.1",
                        f"-c unix_socket_directories={shlex.quote(str(self.directory))}",
                        "-c fsync=off",
                        "-c synchronous_commit=off",
                        "-c full_page_writes=off",
                        "-c max_connections=200",
                    ]
                ),
                timeout=6 * TIMEOUT,
            )
            if result.returncode == 0:
                self._started = True
                self._wait_ready()
                return
            last = result.stdout + result.stderr + self.logs()
            if "could not bind" not in last and "already in use" not in last:
                break
        raise PostgresServerError(f"pg_ctl start failed:\n{last}")

    def _initdb(self) -> None:
        result = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # nothing here has to survive a power cut
            timeout=12 * TIMEOUT,
        )
        if result.returncode != 0:
            raise PostgresServerError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def _wait_ready(self) -> None:
        """pg_ctl -w already waited; this proves the TCP listener answers a query too."""
        deadline = time.monotonic() + 4 * TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
            time.sleep(0.05)
        self.stop()
        raise PostgresServerError(
            f"PostgreSQL on port {self.port} did not answer within {4 * TIMEOUT} s "
            f"({last_error!r}):\n{self.logs()}"
        )

    def create_database(self) -> str:
        """A new, empty database (copied from template0, which nobody is connected to)."""
        name = f"t_{uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        """Drop it even if a test left connections open (FORCE ends them)."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """pg_ctl stop -m fast (ends sessions, no waiting for clients); SIGKILL as a last resort."""
        if not self._started:
            return
        self._started = False
        result = self._run(
            "pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", timeout=6 * TIMEOUT
        )
        if result.returncode != 0:
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Stop and remove the whole cluster."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
