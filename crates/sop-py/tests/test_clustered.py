"""Clustered mode: several processes on one folder, coordinated through a real Redis.

The ``redis`` fixture runs ``redis-server`` (from PATH, or ``$REDIS_SERVER``) on a free loopback
port without persistence. A missing redis-server FAILS these tests: it is not a reason to skip.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

import pytest

import sop
from sop import (ConflictError, Database, DatabaseError, DatabaseOptions, DatabaseType, Item,
                 RedisCacheConfig, RedisConnectionError, TransactionMode)

START_TIMEOUT = 10.0
CHILD_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------
# A throwaway redis-server

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_ping(port: int) -> bool:
    """True once the server answers PING (``-NOAUTH`` counts: it is up, it wants a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")


@dataclass
class RedisServer:
    proc: subprocess.Popen
    port: int
    password: str | None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_redis(workdir: str, password: str | None = None) -> RedisServer:
    exe = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not exe:
        pytest.fail("redis-server is not installed (the clustered-mode tests need it; e.g. "
                    "`apt-get install redis-server`, or set $REDIS_SERVER)", pytrace=False)
    failures = []
    for _ in range(5):  # another process may take the port between picking and binding it
        port = _free_port()
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", workdir]
        if password:
            args += ["--requirepass", password]
        log = open(os.path.join(workdir, f"redis-{port}.log"), "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = RedisServer(proc, port, password)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_ping(port):
                return server
            time.sleep(0.02)
        server.stop()
        with open(os.path.join(workdir, f"redis-{port}.log"), "rb") as f:
            failures.append(f"port {port}: {f.read().decode(errors='replace')[-500:]}")
    pytest.fail("could not start redis-server:\n" + "\n".join(failures), pytrace=False)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = start_redis(str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_global_redis():
    sop.Redis.close()
    yield
    sop.Redis.close()


def clustered(path, redis: RedisServer | None = None, **cfg) -> Database:
    rc = RedisCacheConfig(**cfg) if cfg else RedisCacheConfig(address=redis.address) if redis else None
    return Database(DatabaseOptions(type=DatabaseType.Clustered, stores_folders=[str(path)], redis_config=rc))


def standalone(path) -> Database:
    return Database(DatabaseOptions(stores_folders=[str(path)]))


def create_store(db: Database, items: dict, store: str = "s") -> None:
    with db.transaction() as tx:
        b = tx.new_btree(store)
        for k, v in items.items():
            b[k] = v


def close(db: Database) -> None:
    """Closes the handle and drops what may still reference it (the engine database closes when
    nothing does)."""
    db.close()
    gc.collect()


def read_all(db: Database, store: str = "s") -> dict:
    with db.transaction(TransactionMode.ForReading) as tx:
        return {it.key: it.value for it in tx.open_btree(store).range()}


# --------------------------------------------------------------------------------------------
# Child processes (fresh interpreters: `sys.executable -c`)

PRELUDE = textwrap.dedent("""
    import os, sys, time
    import sop

    def barrier(folder, me, n):
        open(os.path.join(folder, f"ready-{me}"), "w").close()
        deadline = time.monotonic() + 60
        while sum(f.startswith("ready-") for f in os.listdir(folder)) < n:
            if time.monotonic() > deadline:
                raise SystemExit("barrier timed out")
            time.sleep(0.005)

    def open_db(path, url):
        return sop.Database(sop.DatabaseOptions(
            type=sop.DatabaseType.Clustered, stores_folders=[path],
            redis_config=sop.RedisCacheConfig(url=url)))

    def retry(f, attempts=200):
        conflicts = 0
        for _ in range(attempts):
            try:
                f()
                return conflicts
            except sop.ConflictError:
                conflicts += 1
        raise SystemExit(f"still conflicting after {attempts} attempts")
""")


def run_children(scripts: list[tuple[str, list[str]]]) -> list[str]:
    """Runs the scripts at once, each in its own interpreter; returns their stdouts."""
    procs = [subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for code, args in scripts]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, f"child failed ({p.returncode}):\n{out}\n{err}"
        outs.append(out.strip())
    return outs


WRITER = """
    path, url, sync, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    db = open_db(path, url)
    db.store_names()  # opens the folder
    barrier(sync, prefix, 2)
    conflicts = 0
    for start in range(0, n, 10):
        def batch():
            with db.transaction() as tx:
                b = tx.open_btree("s")
                for i in range(start, min(start + 10, n)):
                    b[f"{prefix}{i:04d}"] = {"by": prefix, "i": i}
        conflicts += retry(batch)
    print(conflicts)
"""

INCREMENT = """
    path, url, sync, me = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    db = open_db(path, url)
    tx = db.transaction()
    b = tx.open_btree("s")
    b["counter"] = b["counter"] + 1
    barrier(sync, me, 2)  # both have read the counter before either commits
    try:
        tx.commit()
        first = "ok"
    except sop.ConflictError:
        first = "conflict"
    def again():
        with db.transaction() as tx:
            b = tx.open_btree("s")
            b["counter"] = b["counter"] + 1
    if first == "conflict":
        retry(again)
    print(first)
"""


# --------------------------------------------------------------------------------------------
# Tests

def test_open_write_read(tmp_path, redis):
    db = clustered(tmp_path / "db", redis)
    with db.transaction() as tx:
        b = tx.new_btree("s")
        b["a"] = 1
        assert b.add(sop.Context(), [Item("b", {"x": [1, 2]}), Item("c", b"raw")])
    with db.transaction() as tx:
        b = tx.open_btree("s")
        b["a"] = b["a"] + 10
        del b["c"]
    assert read_all(db) == {"a": 11, "b": {"x": [1, 2]}}
    assert db._db().clustered
    assert Database.get_options(None, str(tmp_path / "db")).type == DatabaseType.Clustered
    # Every Database on the folder shares this process's handle (clustered too).
    other = clustered(tmp_path / "db", url=redis.url)
    assert other.path == db.path
    assert read_all(other) == {"a": 11, "b": {"x": [1, 2]}}
    with db.transaction() as tx:
        tx.open_btree("s")["d"] = 4
    assert read_all(other)["d"] == 4
    db.close()
    other.close()


def test_global_redis_initialize(tmp_path, redis):
    path = tmp_path / "db"
    with pytest.raises(DatabaseError, match="none is configured") as e:
        clustered(path).begin_transaction()
    assert not isinstance(e.value, sop.ClusteredModeNotAvailableError)
    sop.Redis.initialize(redis.url)
    db = clustered(path)
    with db.transaction() as tx:
        tx.new_btree("s")["k"] = "v"
    assert read_all(db) == {"k": "v"}
    db.close()
    sop.Redis.initialize(redis.address)  # host:port works too
    db = clustered(tmp_path / "db2")
    sop.Database.setup(None, db.options)
    assert db.store_names() == []
    db.close()


def test_two_processes_write_disjoint_keys(tmp_path, redis):
    path, sync = str(tmp_path / "db"), tmp_path / "sync"
    sync.mkdir()
    db = clustered(path, redis)
    create_store(db, {"seed": 0})
    n = 150
    outs = run_children([(WRITER, [path, redis.url, str(sync), p, str(n)]) for p in ("A", "B")])
    # This process kept the folder open too: it sees both children's commits.
    items = read_all(db)
    assert len(items) == 2 * n + 1
    for p in ("A", "B"):
        assert all(items[f"{p}{i:04d}"] == {"by": p, "i": i} for i in range(n))
    close(db)
    # Standalone again: everything is there.
    s = standalone(path)
    assert read_all(s) == items
    s.close()
    print("conflicts retried:", outs)


def test_read_modify_write_conflict_one_wins(tmp_path, redis):
    path, sync = str(tmp_path / "db"), tmp_path / "sync"
    sync.mkdir()
    db = clustered(path, redis)
    create_store(db, {"counter": 0})
    close(db)  # the children open the folder on their own
    outs = run_children([(INCREMENT, [path, redis.url, str(sync), me]) for me in ("A", "B")])
    assert sorted(outs) == ["conflict", "ok"], outs
    s = standalone(path)
    assert read_all(s) == {"counter": 2}  # the loser retried: no lost update
    s.close()


def test_conflict_with_a_child_process(tmp_path, redis):
    """The same conflict seen from this process: its transaction read a key a child changed."""
    path = str(tmp_path / "db")
    db = clustered(path, redis)
    create_store(db, {"counter": 0})
    tx = db.transaction()
    b = tx.open_btree("s")
    b["counter"] = b["counter"] + 1
    run_children([("""
        db = open_db(sys.argv[1], sys.argv[2])
        with db.transaction() as tx:
            b = tx.open_btree("s")
            b["counter"] = b["counter"] + 100
    """, [path, redis.url])])
    with pytest.raises(ConflictError):
        tx.commit()
    assert read_all(db) == {"counter": 100}
    db.close()


def test_wrong_port_is_a_clear_error(tmp_path, redis):
    path = tmp_path / "db"
    port = _free_port()  # nothing listens there
    with pytest.raises(RedisConnectionError, match=f"127.0.0.1:{port}.*unreachable"):
        clustered(path, address=f"127.0.0.1:{port}").begin_transaction()
    with pytest.raises(RedisConnectionError, match="unreachable"):
        clustered(path, url=f"redis://127.0.0.1:{port}/0").store_names()
    assert issubclass(RedisConnectionError, DatabaseError)
    # The failed opens left nothing behind: the folder opens with the right Redis.
    db = clustered(path, redis)
    with db.transaction() as tx:
        tx.new_btree("s")["k"] = 1
    assert read_all(db) == {"k": 1}
    db.close()


def test_wrong_password_is_a_clear_error(tmp_path):
    server = start_redis(str(tmp_path), password="s3cret")
    try:
        path = tmp_path / "db"
        with pytest.raises(RedisConnectionError, match="password") as e:
            clustered(path, address=server.address, password="wrong").store_names()
        assert "wrong" not in str(e.value)
        with pytest.raises(RedisConnectionError, match="password"):
            clustered(path, address=server.address).store_names()  # none given
        db = clustered(path, address=server.address, password="s3cret")
        with db.transaction() as tx:
            tx.new_btree("s")["k"] = 1
        db.close()
        db = clustered(path, url=server.url)
        assert read_all(db) == {"k": 1}
        db.close()
    finally:
        server.stop()


def test_one_mode_per_folder_in_a_process(tmp_path, redis):
    path = tmp_path / "db"
    db = clustered(path, redis)
    create_store(db, {"k": 1})
    with pytest.raises(DatabaseError, match="already open in clustered mode"):
        standalone(path).store_names()
    close(db)
    s = standalone(path)
    assert read_all(s) == {"k": 1}
    with s.transaction() as tx:
        tx.open_btree("s")["k2"] = 2
    with pytest.raises(DatabaseError, match="already open in standalone mode"):
        clustered(path, redis).store_names()
    del tx
    close(s)
    db = clustered(path, redis)
    assert read_all(db) == {"k": 1, "k2": 2}
    db.close()


def _forked_child(db: Database, path: str, url: str) -> None:
    # `db` was opened by the parent: here it opens the folder again (its own handle).
    with db.transaction() as tx:
        tx.open_btree("s")["from-inherited"] = os.getpid()
    fresh = Database(DatabaseOptions(type=DatabaseType.Clustered, stores_folders=[path],
                                     redis_config=RedisCacheConfig(url=url)))
    with fresh.transaction() as tx:
        tx.open_btree("s")["from-fresh"] = os.getpid()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_forked_child_opens_its_own_handle(tmp_path, redis):
    path = str(tmp_path / "db")
    db = clustered(path, redis)
    create_store(db, {"parent": os.getpid()})
    p = multiprocessing.get_context("fork").Process(target=_forked_child, args=(db, path, redis.url))
    p.start()
    p.join(CHILD_TIMEOUT)
    assert p.exitcode == 0
    items = read_all(db)
    assert items["parent"] == os.getpid()
    assert items["from-inherited"] == items["from-fresh"] == p.pid
    with db.transaction() as tx:  # the parent's handle still works
        tx.open_btree("s")["after"] = 1
    assert len(read_all(db)) == 4
    db.close()


def test_unavailable_backends_still_rejected(tmp_path, redis):
    base = dict(type=DatabaseType.Clustered, redis_config=RedisCacheConfig(address=redis.address))
    for o in [DatabaseOptions(stores_folders=[str(tmp_path)], keyspace="ks", **base),
              DatabaseOptions(stores_folders=[str(tmp_path / "a"), str(tmp_path / "b")], **base),
              DatabaseOptions(stores_folders=[str(tmp_path)], erasure_config={
                  "": sop.ErasureCodingConfig(1, 1, [str(tmp_path / "x"), str(tmp_path / "y")])}, **base)]:
        with pytest.raises(sop.ClusteredModeNotAvailableError, match="not available yet"):
            Database(o).begin_transaction()
