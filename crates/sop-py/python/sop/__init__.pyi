"""Type stubs of the ``sop`` package (sop4py's core API on the SOP-rs engine, plus a pythonic layer).

``ctx`` is optional on every call: each method taking ``*args`` accepts its sop4py form
(``ctx`` first) and the same call without ``ctx`` (or with ``None`` in its place).
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Generic, Iterator, Sequence, TypeVar, overload

from ._sop import (
    BtreeError as BtreeError,
    ConflictError as ConflictError,
    DatabaseError as DatabaseError,
    InvalidTransactionStateError as InvalidTransactionStateError,
    RedisConnectionError as RedisConnectionError,
    TransactionError as TransactionError,
)

__version__: str
NIL_UUID: str
__all__: list[str]

class ClusteredModeNotAvailableError(DatabaseError): ...

# Context, logging, clustered-mode configuration -----------------------------------------------

class Context:
    id: int
    def __init__(self) -> None: ...
    def cancel(self) -> None: ...
    def error(self) -> str | None: ...
    def is_valid(self) -> bool: ...

class LogLevel(IntEnum):
    Debug = 0
    Info = 1
    Warn = 2
    Error = 3

class Logger:
    @staticmethod
    def configure(level: LogLevel | int, log_path: str | None = None) -> None: ...

class Redis:
    connection_string: ClassVar[str | None]
    @staticmethod
    def initialize(connection_string: str) -> None: ...
    @staticmethod
    def close() -> None: ...

class Cassandra:
    config: ClassVar[dict[str, Any] | None]
    @staticmethod
    def initialize(config: dict[str, Any]) -> None: ...
    @staticmethod
    def close() -> None: ...

# Options and data classes ----------------------------------------------------------------

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
    type: DatabaseType = ...
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
    transaction_id: str = ...
    cache_config: CacheConfig | None = None
    is_primitive_key: bool = True
    leaf_load_balancing: bool = False
    relations: list[Relation] | None = None
    def set_index_specification(self, spec: IndexSpecification) -> None: ...
    def set_value_data_size(self, s: ValueDataSize) -> None: ...

TK = TypeVar("TK")
TV = TypeVar("TV")

@dataclass
class Item(Generic[TK, TV]):
    key: TK
    value: TV = ...
    id: str = ...

@dataclass
class PagingInfo:
    page_offset: int = 0
    page_size: int = 20
    fetch_count: int = 0
    direction: int = 0

# Database / Transaction --------------------------------------------------------------------

_Ctx = Context | None

class Database:
    options: DatabaseOptions
    def __init__(self, options: DatabaseOptions | None = None, *, path: str | None = None) -> None: ...
    @property
    def path(self) -> str: ...
    @overload
    def begin_transaction(self, ctx: _Ctx, mode: TransactionMode | int = ..., max_time: int | float = ...) -> Transaction: ...
    @overload
    def begin_transaction(self, mode: TransactionMode | int = ..., max_time: int | float = ...) -> Transaction: ...
    def transaction(self, mode: TransactionMode | int = ..., max_time: int = 15) -> Transaction: ...
    @overload
    def new_btree(self, ctx: _Ctx, name: str, trans: Transaction, options: BtreeOptions | None = None,
                  index_spec: IndexSpecification | None = None) -> Btree: ...
    @overload
    def new_btree(self, name: str, trans: Transaction, options: BtreeOptions | None = None,
                  index_spec: IndexSpecification | None = None) -> Btree: ...
    @overload
    def open_btree(self, ctx: _Ctx, name: str, trans: Transaction) -> Btree: ...
    @overload
    def open_btree(self, name: str, trans: Transaction) -> Btree: ...
    @overload
    def remove_btree(self, ctx: _Ctx, name: str) -> None: ...
    @overload
    def remove_btree(self, name: str) -> None: ...
    def store_names(self) -> list[str]: ...
    def close(self) -> None: ...
    @staticmethod
    def setup(ctx: _Ctx, options: DatabaseOptions) -> None: ...
    @staticmethod
    def get_options(ctx: _Ctx, store_path: str) -> DatabaseOptions | None: ...

class Transaction:
    mode: TransactionMode
    transaction_id: Any
    database_id: Any
    begun: bool
    @property
    def database(self) -> Database: ...
    def begin(self) -> None: ...
    def commit(self, ctx: _Ctx = None) -> None: ...
    def rollback(self, ctx: _Ctx = None) -> None: ...
    def is_active(self) -> bool: ...
    def __enter__(self) -> Transaction: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None: ...
    def new_btree(self, name: str, options: BtreeOptions | None = None,
                  index_spec: IndexSpecification | None = None) -> Btree: ...
    def open_btree(self, name: str) -> Btree: ...
    def remove_btree(self, name: str) -> bool: ...
    def store_names(self) -> list[str]: ...

# Btree -------------------------------------------------------------------------------------

_AnyItem = Item[Any, Any]
_Items = _AnyItem | Sequence[_AnyItem]

class Btree:
    transaction: Transaction
    @property
    def name(self) -> str: ...

    # mutators: (ctx, key, value=None) | (ctx, Item) | (ctx, list[Item]); ctx may be left out.
    @overload
    def add(self, ctx: _Ctx, item: _Items, /) -> bool: ...
    @overload
    def add(self, ctx: _Ctx, key: Any, value: Any = None, /) -> bool: ...
    @overload
    def add(self, key: Any, value: Any = None, /) -> bool: ...
    @overload
    def add_if_not_exists(self, ctx: _Ctx, item: _Items, /) -> bool: ...
    @overload
    def add_if_not_exists(self, ctx: _Ctx, key: Any, value: Any = None, /) -> bool: ...
    @overload
    def add_if_not_exists(self, key: Any, value: Any = None, /) -> bool: ...
    @overload
    def upsert(self, ctx: _Ctx, item: _Items, /) -> bool: ...
    @overload
    def upsert(self, ctx: _Ctx, key: Any, value: Any = None, /) -> bool: ...
    @overload
    def upsert(self, key: Any, value: Any = None, /) -> bool: ...
    @overload
    def update(self, ctx: _Ctx, item: _Items, /) -> bool: ...
    @overload
    def update(self, ctx: _Ctx, key: Any, value: Any = None, /) -> bool: ...
    @overload
    def update(self, key: Any, value: Any = None, /) -> bool: ...
    @overload
    def remove(self, ctx: _Ctx, key: Any, /) -> bool: ...
    @overload
    def remove(self, key: Any, /) -> bool: ...
    @overload
    def update_key(self, ctx: _Ctx, items: _Items, /) -> bool: ...
    @overload
    def update_key(self, items: _Items, /) -> bool: ...
    @overload
    def update_current_key(self, ctx: _Ctx, item: _AnyItem, /) -> bool: ...
    @overload
    def update_current_key(self, item: _AnyItem, /) -> bool: ...

    # navigation
    @overload
    def find(self, ctx: _Ctx, key: Any, first_item_with_key: bool = False, /) -> bool: ...
    @overload
    def find(self, key: Any, /, *, first_item_with_key: bool = False) -> bool: ...
    @overload
    def find_with_id(self, ctx: _Ctx, key: Any, id: str, /) -> bool: ...
    @overload
    def find_with_id(self, key: Any, id: str, /) -> bool: ...
    def first(self, ctx: _Ctx = None) -> bool: ...
    def last(self, ctx: _Ctx = None) -> bool: ...
    def next(self, ctx: _Ctx = None) -> bool: ...
    def previous(self, ctx: _Ctx = None) -> bool: ...
    def get_current_key(self, ctx: _Ctx = None) -> _AnyItem: ...
    def get_current_item(self, ctx: _Ctx = None) -> _AnyItem: ...
    def get_current_value(self, ctx: _Ctx = None) -> _AnyItem: ...
    @overload
    def get_keys(self, ctx: _Ctx, paging: PagingInfo | None = None, /) -> list[_AnyItem]: ...
    @overload
    def get_keys(self, paging: PagingInfo | None = None, /) -> list[_AnyItem]: ...
    @overload
    def get_items(self, ctx: _Ctx, paging: PagingInfo | None = None, /) -> list[_AnyItem]: ...
    @overload
    def get_items(self, paging: PagingInfo | None = None, /) -> list[_AnyItem]: ...
    @overload
    def get_values(self, ctx: _Ctx, items: _Items, /) -> list[_AnyItem]: ...
    @overload
    def get_values(self, items: _Items, /) -> list[_AnyItem]: ...
    def count(self, ctx: _Ctx = None) -> int: ...
    def is_unique(self, ctx: _Ctx = None) -> bool: ...
    def get_store_info(self, ctx: _Ctx = None) -> BtreeOptions: ...

    # pythonic
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def __getitem__(self, key: Any) -> Any: ...
    def get(self, key: Any, default: Any = None) -> Any: ...
    def __setitem__(self, key: Any, value: Any) -> None: ...
    def __delitem__(self, key: Any) -> None: ...
    def range(self, lo: Any = None, hi: Any = None, reverse: bool = False) -> Iterator[_AnyItem]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def items(self) -> Iterator[_AnyItem]: ...

