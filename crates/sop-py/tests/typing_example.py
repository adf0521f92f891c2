"""Checked by ``mypy --strict`` (tests/test_typing.py): the API as editors and type checkers see it.

Not collected by pytest as a test module (no ``test_`` prefix); it is also runnable as a script.
"""
from __future__ import annotations

import sys
import tempfile

import sop
from sop import (BtreeOptions, Context, Database, DatabaseOptions, DatabaseType, IndexFieldSpecification,
                 IndexSpecification, Item, PagingInfo, Redis, RedisCacheConfig, TransactionMode)


def sop4py_style(folder: str) -> list[Item[str, int]]:
    ctx = Context()
    db = Database(DatabaseOptions(stores_folders=[folder]))
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "fruit", t, BtreeOptions(is_unique=True))
        ok: bool = b.add(ctx, Item(key="apple", value=3))
        ok = ok and b.add(ctx, [Item(key="pear", value=5), Item(key="plum", value=7)])
        ok = ok and b.upsert(ctx, "kiwi", 1) and b.update_key(ctx, Item(key="kiwi"))
        assert ok and b.find(ctx, "pear") and b.update_current_key(ctx, Item(key="pear"))
    with db.begin_transaction(ctx, TransactionMode.ForReading) as t:
        b = db.open_btree(ctx, "fruit", t)
        b.first(ctx)
        page: list[Item[str, int]] = b.get_items(ctx, PagingInfo(page_size=10))
        found = b.get_values(ctx, [Item(key="apple")])
        assert found[0].value == 3 and b.count() == 4
        return page


def pythonic_style(folder: str) -> int:
    db = Database(path=folder)
    spec = IndexSpecification(index_fields=[IndexFieldSpecification("dept")])
    with db.transaction() as tx:
        people = tx.new_btree("people", index_spec=spec)
        people[{"dept": "a", "name": "x"}] = {"age": 3}
        people.add({"dept": "b"}, None)
        total = len(people)
        names = [it.key["dept"] for it in people.range({"dept": "a"}, None)]
        assert names == ["a", "b"] and {"dept": "a"} in people
    err: type[Exception] = sop.BtreeError
    assert issubclass(err, sop.TransactionError)
    return total


def clustered_database(folder: str, address: str) -> Database:
    """Clustered-mode configuration as type checkers see it (lazy: nothing is opened here)."""
    Redis.initialize(f"redis://{address}/0")
    Redis.close()
    err: type[Exception] = sop.RedisConnectionError
    assert issubclass(err, sop.DatabaseError)
    return Database(DatabaseOptions(type=DatabaseType.Clustered, stores_folders=[folder],
                                    redis_config=RedisCacheConfig(address=address)))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        print(len(sop4py_style(d + "/a")), pythonic_style(d + "/b"))
    sys.exit(0)
