"""A throwaway PostgreSQL server for tests and benches: Debian's postgresql 15 binaries, a data folder in
a temp folder, a free port on 127.0.0.1, fsync off. PostgreSQL refuses to run as root, so as root it runs
as the `postgres` user (runuser). `with PostgresServer() as pg: url = pg.database("t1")`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

PG_BIN = Path(os.environ.get("TEACHGRAPH_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresMissing(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bin_dir: Path = PG_BIN):
        self.bin = bin_dir
        self.port = 0
        self.dir: Path | None = None

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.dir, stdin=subprocess.DEVNULL)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done

    def start(self) -> "PostgresServer":
        if not (self.bin / "initdb").exists() or not (self.bin / "pg_ctl").exists():
            raise PostgresMissing(f"PostgreSQL 15 is not installed ({self.bin}/initdb missing): "
                                  f"apt-get install postgresql (or set TEACHGRAPH_PG_BIN)")
        self.dir = Path(tempfile.mkdtemp(prefix="teachgraph-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        self.port = _free_port()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-w", "-t", "60",
                  "-l", str(self.dir / "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self, name: str | None = None) -> str:
        """A new, empty database on the server; its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop",
                      timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
