"""SOP-rs for Python: sop4py's core API on the SOP-rs engine, plus a pythonic layer.

sop4py style::

    ctx = sop.Context()
    db = sop.Database(sop.DatabaseOptions(stores_folders=["/tmp/data"]))
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "fruit", t)
        b.add(ctx, sop.Item(key="apple", value=3))

Pythonic style (``ctx`` may be left out everywhere)::

    with db.transaction() as tx:
        fruit = tx.open_btree("fruit")
        fruit["pear"] = 5
        print(len(fruit), "apple" in fruit, fruit["apple"])
        for item in fruit.range("a", "p"):
            ...

Clustered mode (several processes on one folder, coordinated through Redis)::

    db = sop.Database(sop.DatabaseOptions(
        type=sop.DatabaseType.Clustered, stores_folders=["/shared/data"],
        redis_config=sop.RedisCacheConfig(address="127.0.0.1:6379")))
    # or, for every clustered database without redis_config: sop.Redis.initialize("redis://host:6379/0")

Each process opens the folder itself; commits of all of them are serialized and validated like
commits of threads (a conflicting one raises ``ConflictError``: run the transaction again). Redis
only coordinates (it holds no data): it may run without persistence. A folder is open in one
mode at a time: standalone (one process) or clustered (any number of processes).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, Iterator, TypeVar

from . import _sop
from ._sop import (
    BtreeError,
    ConflictError,
    DatabaseError,
    InvalidTransactionStateError,
    RedisConnectionError,
    TransactionError,
)

__version__ = "2.3.3"

NIL_UUID = "00000000-0000-0000-0000-000000000000"

__all__ = [
    "Btree", "BtreeError", "BtreeOptions", "CacheConfig", "Cassandra", "ClusteredModeNotAvailableError",
    "ConflictError", "Context", "Database", "DatabaseError", "DatabaseOptions", "DatabaseType",
    "ErasureCodingConfig", "IndexFieldSpecification", "IndexSpecification", "InvalidTransactionStateError",
    "Item", "LogLevel", "Logger", "PagingDirection", "PagingInfo", "Redis", "RedisCacheConfig",
    "RedisConnectionError", "Relation",
    "Transaction", "TransactionError", "TransactionMode", "TransactionOptions", "ValueDataSize",
]


class ClusteredModeNotAvailableError(DatabaseError):
    """A SOP backend that SOP-rs does not have yet: Cassandra (``keyspace``), replication (a
    passive stores folder) or erasure coding. (Clustered mode with Redis is available; the name
    is kept for compatibility.)"""


# --------------------------------------------------------------------------------------------
# Context, logging, global clustered-mode helpers

class Context:
    """A call context (sop4py passes one to every engine call). Here it only tracks cancellation."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id: int = next(Context._ids)
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def error(self) -> str | None:
        return "context canceled" if self._cancelled else None

    def is_valid(self) -> bool:
        return not self._cancelled

    def __repr__(self) -> str:
        return f"Context(id={self.id})"


def _check_ctx(ctx: Any) -> None:
    if isinstance(ctx, Context) and ctx._cancelled:
        raise TransactionError(f"context with ID {ctx.id} not found")


class LogLevel(IntEnum):
    Debug = 0
    Info = 1
    Warn = 2
    Error = 3


class Logger:
    """Process-wide logging configuration (maps onto the ``sop`` Python logger)."""

    @staticmethod
    def configure(level: LogLevel | int, log_path: str | None = None) -> None:
        log = logging.getLogger("sop")
        log.setLevel({0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}.get(int(level), logging.INFO))
        if log_path:
            log.addHandler(logging.FileHandler(log_path))


class Redis:
    """The process-wide Redis of clustered mode, used by every ``DatabaseType.Clustered``
    database opened without ``DatabaseOptions.redis_config``.

    ``initialize`` takes a ``redis://[:password@]host[:port][/db]`` URL (or ``host:port``); it
    only records it: Redis is reached when a database opens (a ``RedisConnectionError`` then if it
    cannot be). ``close`` forgets it; databases already open keep their own connections."""

    connection_string: str | None = None

    @staticmethod
    def initialize(connection_string: str) -> None:
        if not isinstance(connection_string, str) or not connection_string.strip():
            raise DatabaseError("Redis.initialize needs a connection string such as redis://127.0.0.1:6379")
        Redis.connection_string = connection_string.strip()

    @staticmethod
    def close() -> None:
        Redis.connection_string = None


class Cassandra:
    """Accepted for compatibility; the Cassandra backend is not available in SOP-rs (a database
    with a ``keyspace`` raises ``ClusteredModeNotAvailableError``)."""

    config: dict | None = None

    @staticmethod
    def initialize(config: dict) -> None:
        Cassandra.config = config

    @staticmethod
    def close() -> None:
        Cassandra.config = None


# --------------------------------------------------------------------------------------------
# Options and data classes

class DatabaseType(IntEnum):
    Standalone = 0
    Clustered = 1


class TransactionMode(IntEnum):
    NoCheck = 0
    ForWriting = 1
    ForReading = 2


class ValueDataSize(IntEnum):
    Small = 0
    Medium = 1
    Big = 2


class PagingDirection(IntEnum):
    Forward = 0
    Backward = 1


@dataclass
class RedisCacheConfig:
    """Where a clustered database reaches Redis: ``url`` (``redis://[:password@]host[:port][/db]``)
    when set, otherwise ``address`` (``host:port``; empty: 127.0.0.1:6379); a non-empty
    ``password`` and a non-zero ``db`` override the URL's."""

    address: str = ""
    password: str = ""
    db: int = 0
    url: str = ""


@dataclass
class ErasureCodingConfig:
    data_shards_count: int
    parity_shards_count: int
    base_folder_paths_across_drives: list[str]
    repair_corrupted_shards: bool = False


@dataclass
class DatabaseOptions:
    type: DatabaseType = DatabaseType.Standalone
    erasure_config: dict[str, ErasureCodingConfig] | None = None
    stores_folders: list[str] | None = None
    keyspace: str | None = None
    registry_hash_mod: int = -1
    redis_config: RedisCacheConfig | None = None


@dataclass
class TransactionOptions(DatabaseOptions):
    mode: int = 1
    max_time: int = 0
    logging: bool = False


@dataclass
class CacheConfig:
    registry_cache_duration: int = 10
    is_registry_cache_ttl: bool = False
    node_cache_duration: int = 5
    is_node_cache_ttl: bool = False
    store_info_cache_duration: int = 5
    is_store_info_cache_ttl: bool = False
    value_data_cache_duration: int = 0
    is_value_data_cache_ttl: bool = False


@dataclass
class IndexFieldSpecification:
    field_name: str
    ascending_sort_order: bool = True


@dataclass
class IndexSpecification:
    index_fields: list[IndexFieldSpecification] | None = None


@dataclass
class Relation:
    source_fields: list[str]
    target_store: str
    target_fields: list[str]


@dataclass
class BtreeOptions:
    name: str = ""
    is_unique: bool = False
    slot_length: int = 500
    description: str = ""
    is_value_data_in_node_segment: bool = True
    is_value_data_actively_persisted: bool = False
    is_value_data_globally_cached: bool = False
    index_specification: str = ""
    transaction_id: str = NIL_UUID
    cache_config: CacheConfig | None = None
    is_primitive_key: bool = True
    leaf_load_balancing: bool = False
    relations: list[Relation] | None = None

    def set_index_specification(self, spec: IndexSpecification) -> None:
        self.index_specification = json.dumps(dataclasses.asdict(spec))
        self.is_primitive_key = False

    def set_value_data_size(self, s: ValueDataSize) -> None:
        s = ValueDataSize(s)
        self.is_value_data_in_node_segment = s == ValueDataSize.Small
        self.is_value_data_actively_persisted = s == ValueDataSize.Big
        self.is_value_data_globally_cached = s == ValueDataSize.Medium


TK = TypeVar("TK")
TV = TypeVar("TV")


@dataclass
class Item(Generic[TK, TV]):
    key: TK
    value: TV = None  # type: ignore[assignment]
    id: str = NIL_UUID


@dataclass
class PagingInfo:
    page_offset: int = 0
    page_size: int = 20
    fetch_count: int = 0
    direction: int = 0


# Types passed to the engine as they are (the hot path skips the dataclass check for them).
_PRIM = frozenset({str, int, float, bytes, bool, type(None), dict, list})


def _plain(v: Any) -> Any:
    """Dataclass instances become dicts (as sop4py sends them)."""
    if type(v) in _PRIM:
        return v
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.asdict(v)
    return v


def _item(t: tuple) -> Item:
    return Item(key=t[0], value=t[1], id=t[2])


_MISSING: Any = object()


def _strip_ctx(args: tuple) -> tuple:
    """Drops a leading Context (or None standing for one): ctx is optional everywhere."""
    if args:
        a0 = args[0]
        if a0 is None:
            return args[1:]
        if isinstance(a0, Context):
            if a0._cancelled:
                raise TransactionError(f"context with ID {a0.id} not found")
            return args[1:]
    return args


# --------------------------------------------------------------------------------------------
# Database

# Bumped in a forked child: a Database opened before the fork then opens the folder again
# instead of writing through the parent's engine handle.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)

class Database:
    """A database in ``options.stores_folders[0]``. Lazy: the folder is opened (and created when
    missing) by the first call that needs it. Every Database on one folder shares one engine
    database within the process, in the mode the folder was first opened in (opening it in the
    other mode raises ``DatabaseError`` until every Database on it is closed).

    ``DatabaseType.Clustered`` lets other processes open the folder at the same time; it needs
    Redis (``options.redis_config``, else ``Redis.initialize``). ``RedisConnectionError`` when
    Redis cannot be reached or refuses the password."""

    def __init__(self, options: DatabaseOptions | None = None, *, path: str | None = None) -> None:
        if options is None:
            options = DatabaseOptions(stores_folders=[path] if path else None)
        elif path:
            raise ValueError("give options or path, not both")
        self.options = options
        self._native: Any = None
        self._generation = _fork_generation
        self._lock = threading.Lock()
        self.id = uuid.uuid4()

    @staticmethod
    def _check_options(o: DatabaseOptions) -> str:
        if o.keyspace:
            raise ClusteredModeNotAvailableError(
                "the Cassandra backend (DatabaseOptions.keyspace) is not available yet in SOP-rs; "
                "clustered mode keeps the data in stores_folders[0] and coordinates through Redis")
        if o.erasure_config:
            raise ClusteredModeNotAvailableError("erasure coding is not available yet in SOP-rs")
        if not o.stores_folders:
            raise DatabaseError("DatabaseOptions.stores_folders must name the database folder")
        if len(o.stores_folders) > 1:
            raise ClusteredModeNotAvailableError(
                "replication (a passive stores folder) is not available yet in SOP-rs; give one folder"
            )
        return o.stores_folders[0]

    @staticmethod
    def _open_native(o: DatabaseOptions) -> Any:
        """Opens (or shares) the engine database of ``o``. Standalone ignores ``redis_config``
        (sop4py uses it there only as a cache); Clustered uses it, or the global ``Redis``."""
        path = Database._check_options(o)
        if int(o.type) != DatabaseType.Clustered:
            return _sop.open_database(path)
        rc = o.redis_config
        if rc is not None:
            return _sop.open_database(path, True, rc.url or None, rc.address or None,
                                      rc.password or None, int(rc.db or 0))
        conn = Redis.connection_string
        if conn:
            if "://" in conn:
                return _sop.open_database(path, True, conn)
            return _sop.open_database(path, True, None, conn)
        raise DatabaseError(
            "clustered mode needs Redis, and none is configured: set DatabaseOptions.redis_config "
            "(sop.RedisCacheConfig(address=..., url=...)) or call sop.Redis.initialize(url) first")

    def _db(self) -> Any:
        if self._native is None or self._generation != _fork_generation:
            if self._generation != _fork_generation:
                # A fork child: the parent's handle (and lock) must not be used here.
                self._lock = threading.Lock()
                self._native = None
                self._generation = _fork_generation
            with self._lock:
                if self._native is None:
                    self._native = self._open_native(self.options)
        return self._native

    @property
    def path(self) -> str:
        return self._db().path

    # sop4py API -------------------------------------------------------------------------

    def begin_transaction(self, *args: Any, **kw: Any) -> Transaction:
        """``begin_transaction(ctx, mode=1, max_time=15)``; ctx may be left out."""
        args = _strip_ctx(args)
        mode = kw.pop("mode", args[0] if len(args) > 0 else TransactionMode.ForWriting)
        max_time = kw.pop("max_time", args[1] if len(args) > 1 else 15)
        if kw:
            raise TypeError(f"unexpected arguments {sorted(kw)}")
        native = self._db().begin(int(mode), float(max_time))
        return Transaction._wrap(self, native, TransactionMode(int(mode)))

    def transaction(self, mode: TransactionMode | int = TransactionMode.ForWriting, max_time: int = 15) -> Transaction:
        """A new transaction, for ``with db.transaction() as tx:``."""
        return self.begin_transaction(None, mode, max_time)

    def new_btree(self, *args: Any, options: BtreeOptions | None = _MISSING,
                  index_spec: IndexSpecification | None = _MISSING) -> Btree:
        """``new_btree(ctx, name, trans, options=None, index_spec=None)``; ctx may be left out."""
        args = list(_strip_ctx(args))
        if len(args) < 2:
            raise TypeError("new_btree(ctx, name, trans, options=None, index_spec=None)")
        name, trans = args[0], args[1]
        if options is _MISSING:
            options = args[2] if len(args) > 2 else None
        if index_spec is _MISSING:
            index_spec = args[3] if len(args) > 3 else None
        return trans._new_btree(name, options, index_spec)

    def open_btree(self, *args: Any) -> Btree:
        """``open_btree(ctx, name, trans)``; ctx may be left out."""
        args = _strip_ctx(args)
        name, trans = args
        return trans.open_btree(name)

    def remove_btree(self, *args: Any) -> None:
        """``remove_btree(ctx, name)``: removes a store and its items, in its own transaction."""
        (name,) = _strip_ctx(args)
        self._db().remove_btree(name)

    def store_names(self) -> list[str]:
        return self._db().store_names()

    def close(self) -> None:
        """Releases this process's handle of the folder (once no transaction uses it)."""
        if self._native is not None:
            if self._generation == _fork_generation:
                _sop.close_database(self._native.path)
            self._native = None

    @staticmethod
    def setup(ctx: Context | None, options: DatabaseOptions) -> None:
        """Creates the database (and its persisted options) in ``options.stores_folders[0]``,
        opening it in this process (clustered mode: with its Redis)."""
        _check_ctx(ctx)
        Database._open_native(options)

    @staticmethod
    def get_options(ctx: Context | None, store_path: str) -> DatabaseOptions | None:
        _check_ctx(ctx)
        ty, path = _sop.read_options(store_path)
        return DatabaseOptions(type=DatabaseType(ty), stores_folders=[path])


# --------------------------------------------------------------------------------------------
# Transaction

class Transaction:
    """A transaction; made by ``Database.begin_transaction`` / ``Database.transaction``.

    ``with`` commits on normal exit and rolls back on exception. A second commit or rollback is
    a silent no-op (as in sop4py)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        raise TransactionError("Transaction can only be created by Database.begin_transaction")

    @classmethod
    def _wrap(cls, db: Database, native: Any, mode: TransactionMode) -> Transaction:
        t = object.__new__(cls)
        t._db = db
        t._native = native
        t.mode = mode
        t.transaction_id = uuid.UUID(hex=native.id())
        t.database_id = db.id
        t.ctx = None
        t.begun = True
        t._completed = False
        return t

    @property
    def database(self) -> Database:
        return self._db

    def begin(self) -> None:
        """No-op: the transaction began in ``begin_transaction``."""

    def commit(self, ctx: Context | None = None) -> None:
        _check_ctx(ctx)
        if self._completed:
            return
        self._completed = True
        self._native.commit()

    def rollback(self, ctx: Context | None = None) -> None:
        _check_ctx(ctx)
        if self._completed:
            return
        self._completed = True
        self._native.rollback()

    def is_active(self) -> bool:
        return self._native.is_active()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    # pythonic -----------------------------------------------------------------------------

    def new_btree(self, name: str, options: BtreeOptions | None = None,
                  index_spec: IndexSpecification | None = None) -> Btree:
        return self._new_btree(name, options, index_spec)

    def _new_btree(self, name: str, options: BtreeOptions | None, index_spec: IndexSpecification | None) -> Btree:
        if options is None:
            options = BtreeOptions(is_unique=True, slot_length=1000,
                                   description="General purpose B-Tree created via Database")
        fields = None
        if index_spec is None and options.index_specification:
            raw = json.loads(options.index_specification)
            index_spec = IndexSpecification(
                index_fields=[IndexFieldSpecification(**f) for f in (raw.get("index_fields") or [])])
        if index_spec is not None and index_spec.index_fields:
            fields = [[f.field_name, bool(f.ascending_sort_order)] for f in index_spec.index_fields]
            if len({f[0] for f in fields}) != len(fields):
                raise BtreeError("error creating Btree, details: index specification lists a field twice")
        if options.is_value_data_in_node_segment:
            size = ValueDataSize.Small
        elif options.is_value_data_actively_persisted:
            size = ValueDataSize.Big
        else:
            size = ValueDataSize.Medium
        opts = dataclasses.asdict(options)
        opts.pop("transaction_id", None)
        if fields is not None:
            opts["index_specification"] = json.dumps({"index_fields": [
                {"field_name": n, "ascending_sort_order": a} for n, a in fields]})
        opts["is_primitive_key"] = bool(options.is_primitive_key) and fields is None
        meta = json.dumps({
            "index_fields": fields,
            "is_primitive_key": bool(options.is_primitive_key) and fields is None,
            "options": opts,
        })
        native = self._native.new_btree(name, int(options.slot_length), bool(options.is_unique),
                                        options.description or "", int(size),
                                        bool(options.leaf_load_balancing), meta)
        return Btree(native, self)

    def open_btree(self, name: str) -> Btree:
        return Btree(self._native.open_btree(name), self)

    def remove_btree(self, name: str) -> bool:
        """Removes a store as part of this transaction."""
        return self._native.remove_btree(name)

    def store_names(self) -> list[str]:
        return self._native.store_names()

    def __repr__(self) -> str:
        return f"Transaction(id={self.transaction_id}, mode={self.mode.name})"


# --------------------------------------------------------------------------------------------
# Btree

def _pairs(args: tuple) -> list[tuple[Any, Any]]:
    """(key, value=None) | (Item,) | (list[Item],) -> [(key, value)]."""
    if not args:
        raise TypeError("expected a key (and value), an Item, or a list of Items")
    first = args[0]
    if isinstance(first, Item):
        k, v = first.key, first.value
        if type(k) in _PRIM and type(v) in _PRIM:
            return [(k, v)]
        return [(_plain(k), _plain(v))]
    if isinstance(first, (list, tuple)):
        # Hot path: a list of Items with plain keys and values.
        try:
            out = [(it.key, it.value) for it in first]
        except AttributeError:
            out = None
        if out is not None:
            prim = _PRIM
            if all(type(k) in prim and type(v) in prim for k, v in out) and all(type(it) is Item for it in first):
                return out
        out = []
        for it in first:
            if isinstance(it, Item):
                out.append((_plain(it.key), _plain(it.value)))
            elif isinstance(it, tuple) and len(it) == 2:
                out.append((_plain(it[0]), _plain(it[1])))
            else:
                raise TypeError("a batch is a list of Items (or (key, value) tuples)")
        return out
    value = args[1] if len(args) > 1 else None
    return [(_plain(first), _plain(value))]


def _lookups(arg: Any) -> list[tuple[Any, str | None]]:
    """Item | list[Item] (or bare keys) -> [(key, id or None)] for lookups by key (and id)."""
    items = arg if isinstance(arg, (list, tuple)) else [arg]
    nil = NIL_UUID
    out = []
    for it in items:
        if isinstance(it, Item):
            out.append((_plain(it.key), None if not it.id or it.id == nil else str(it.id)))
        else:
            out.append((_plain(it), None))
    return out


class Btree:
    """A store opened in one transaction, with its own cursor. ``ctx`` is optional on every
    method. Keys: str, int, float, bytes (primitive stores) or dicts ordered by the store's
    index specification. Values: anything JSON can encode, or bytes (stored raw)."""

    def __init__(self, native: Any, transaction: Transaction) -> None:
        self._n = native
        self.transaction = transaction

    @property
    def name(self) -> str:
        return self._n.name

    # mutators -----------------------------------------------------------------------------

    def add(self, *args: Any) -> bool:
        """``add(ctx, key | Item | list[Item], value=None)``; False when a key exists (unique)."""
        args = _strip_ctx(args)
        if args and type(args[0]) is list:
            return self._n.write_items(args[0], 0, Item, _plain)
        return self._n.add(_pairs(args))

    def add_if_not_exists(self, *args: Any) -> bool:
        args = _strip_ctx(args)
        if args and type(args[0]) is list:
            return self._n.write_items(args[0], 1, Item, _plain)
        return self._n.add_if_not_exists(_pairs(args))

    def upsert(self, *args: Any) -> bool:
        args = _strip_ctx(args)
        if args and type(args[0]) is list:
            return self._n.write_items(args[0], 2, Item, _plain)
        return self._n.upsert(_pairs(args))

    def update(self, *args: Any) -> bool:
        """False when a key is missing."""
        args = _strip_ctx(args)
        if args and type(args[0]) is list:
            return self._n.write_items(args[0], 3, Item, _plain)
        return self._n.update(_pairs(args))

    def remove(self, *args: Any) -> bool:
        """``remove(ctx, key | list[key])``; False when a key is missing (others are removed)."""
        args = _strip_ctx(args)
        if len(args) != 1:
            raise TypeError("remove(ctx, key | list[key])")
        k = args[0]
        if type(k) in _PRIM and type(k) is not list:
            return self._n.remove([k])
        keys = k if type(k) is list else list(k) if isinstance(k, tuple) else [k]
        return self._n.remove_items(keys, Item, _plain)

    def update_key(self, *args: Any) -> bool:
        """``update_key(ctx, Item | list[Item])``: finds each item by its key (and id, when not
        nil) and replaces the stored key by ``item.key``, which must compare equal to it: with an
        index specification, fields outside it may change. False when any item is missing (or
        its key would change the order); the others are updated."""
        (arg,) = _strip_ctx(args)
        return self._n.update_key(_lookups(arg))

    def update_current_key(self, *args: Any) -> bool:
        """``update_current_key(ctx, Item)``: replaces the key of the item under the cursor by
        ``item.key`` (a key comparing equal to it); False when there is no current item or the
        new key would change the order."""
        (arg,) = _strip_ctx(args)
        key = arg.key if isinstance(arg, Item) else arg
        return self._n.update_current_key(_plain(key))

    # navigation ---------------------------------------------------------------------------

    def find(self, *args: Any, first_item_with_key: bool = False) -> bool:
        """``find(ctx, key, first_item_with_key=False)``: True when found; otherwise the cursor
        rests on the next greater item (or the last item)."""
        args = _strip_ctx(args)
        if len(args) > 1:
            first_item_with_key = args[1]
        return self._n.find(_plain(args[0]), bool(first_item_with_key))

    def find_with_id(self, *args: Any) -> bool:
        key, id = _strip_ctx(args)
        return self._n.find_with_id(_plain(key), str(id))

    def first(self, ctx: Context | None = None) -> bool:
        _check_ctx(ctx)
        return self._n.first()

    def last(self, ctx: Context | None = None) -> bool:
        _check_ctx(ctx)
        return self._n.last()

    def next(self, ctx: Context | None = None) -> bool:
        _check_ctx(ctx)
        return self._n.next()

    def previous(self, ctx: Context | None = None) -> bool:
        _check_ctx(ctx)
        return self._n.previous()

    def get_current_key(self, ctx: Context | None = None) -> Item:
        """Key and id under the cursor (value None); key None and nil id off the ends."""
        _check_ctx(ctx)
        t = self._n.current(False)
        return Item(key=None, value=None, id=NIL_UUID) if t is None else _item(t)

    def get_current_item(self, ctx: Context | None = None) -> Item:
        _check_ctx(ctx)
        t = self._n.current(True)
        return Item(key=None, value=None, id=NIL_UUID) if t is None else _item(t)

    get_current_value = get_current_item

    def _page(self, args: tuple, with_values: bool) -> list[Item]:
        args = _strip_ctx(args)
        p = args[0] if args else PagingInfo()
        if p is None:
            p = PagingInfo()
        if p.page_size < 0 or p.page_offset < 0 or p.fetch_count < 0:
            raise BtreeError("paging info: page_offset, page_size and fetch_count must not be negative")
        count = p.fetch_count if p.fetch_count > 0 else p.page_size
        backward = int(p.direction) >= 1
        return [_item(t) for t in self._n.page(count, p.page_offset * p.page_size, backward, with_values)]

    def get_keys(self, *args: Any) -> list[Item]:
        """``get_keys(ctx, PagingInfo)``: keys (value None) from the cursor, advancing it."""
        return self._page(args, False)

    def get_items(self, *args: Any) -> list[Item]:
        """``get_items(ctx, PagingInfo)``: items from the cursor, advancing it. Off the ends the
        cursor restarts at the first (forward) or last (backward) item."""
        return self._page(args, True)

    def get_values(self, *args: Any) -> list[Item]:
        """``get_values(ctx, Item | list[Item])``: point lookups by key (or key + id). A missing
        key comes back as the input item."""
        (arg,) = _strip_ctx(args)
        if type(arg) is not list:
            arg = list(arg) if isinstance(arg, tuple) else [arg]
        return self._n.get_value_items(arg, Item, _plain)

    def count(self, ctx: Context | None = None) -> int:
        return self._n.count()

    def is_unique(self, ctx: Context | None = None) -> bool:
        return self._n.is_unique()

    def get_store_info(self, ctx: Context | None = None) -> BtreeOptions:
        """The store's options (sop4py 2.3.3 raises TypeError here; this returns them)."""
        name, opts_json, _count = self._n.info()
        opts = json.loads(opts_json)
        meta: dict = {}
        if opts.get("key_type") == "sop-py/1" and opts.get("value_type"):
            meta = json.loads(opts["value_type"])
        saved = dict(meta.get("options") or {})
        known = {f.name for f in dataclasses.fields(BtreeOptions)}
        saved = {k: v for k, v in saved.items() if k in known}
        cc = saved.pop("cache_config", None)
        rel = saved.pop("relations", None)
        b = BtreeOptions(**saved)
        b.cache_config = CacheConfig(**cc) if isinstance(cc, dict) else None
        b.relations = [Relation(**r) for r in rel] if rel else None
        b.name = name
        b.slot_length = opts.get("slot_length", b.slot_length)
        b.is_unique = opts.get("is_unique", b.is_unique)
        b.description = opts.get("description", b.description)
        b.leaf_load_balancing = opts.get("leaf_load_balancing", b.leaf_load_balancing)
        placement = opts.get("value_placement", "InNode")
        b.is_value_data_in_node_segment = placement == "InNode"
        b.is_value_data_actively_persisted = placement == "ActivelyPersisted"
        b.transaction_id = str(self.transaction.transaction_id)
        return b

    # pythonic -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n.count()

    def __contains__(self, key: Any) -> bool:
        return self._n.contains(_plain(key))

    def __getitem__(self, key: Any) -> Any:
        found, value = self._n.get(_plain(key))
        if not found:
            raise KeyError(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        found, value = self._n.get(_plain(key))
        return value if found else default

    def __setitem__(self, key: Any, value: Any) -> None:
        self._n.upsert([(_plain(key), _plain(value))])

    def __delitem__(self, key: Any) -> None:
        if not self._n.remove([_plain(key)]):
            raise KeyError(key)

    def range(self, lo: Any = None, hi: Any = None, reverse: bool = False) -> Iterator[Item]:
        """Items with ``lo <= key < hi`` in key order (``reverse=True``: descending). ``None``
        leaves an end open; for dict keys a bound may give only the leading index fields."""
        it = self._n.range(_plain(lo), _plain(hi), reverse)
        while True:
            chunk = it.next_chunk()
            if not chunk:
                return
            for t in chunk:
                yield _item(t)

    def __iter__(self) -> Iterator[Any]:
        for it in self.range():
            yield it.key

    def items(self) -> Iterator[Item]:
        return self.range()

    def __repr__(self) -> str:
        return f"Btree(name={self.name!r})"
