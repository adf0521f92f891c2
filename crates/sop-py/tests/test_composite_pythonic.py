"""Composite keys, the pythonic layer, and multi-threaded commits."""
import threading
from dataclasses import dataclass

import pytest

import sop
from sop import (BtreeOptions, ConflictError, IndexFieldSpecification, IndexSpecification, Item,
                 PagingInfo, TransactionError, TransactionMode)


def spec():
    return IndexSpecification(index_fields=[
        IndexFieldSpecification("dept", ascending_sort_order=True),
        IndexFieldSpecification("age", ascending_sort_order=False),
    ])


@dataclass
class Person:
    dept: str
    age: int
    name: str


def test_composite_keys_descending_field(db, ctx):
    people = [Person("b", 30, "x"), Person("a", 20, "y"), Person("a", 40, "z"), Person("b", 25, "w")]
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "people", t, BtreeOptions(is_unique=True), spec())
        assert b.add(ctx, [Item(p, {"n": p.name}) for p in people])
        # same index fields, other extra field: same key in a unique store
        assert b.add(ctx, {"dept": "a", "age": 20, "name": "other"}, 1) is False
    with db.begin_transaction(ctx, TransactionMode.ForReading) as t:
        b = db.open_btree(ctx, "people", t)
        b.first(ctx)
        got = b.get_items(ctx, PagingInfo(page_size=10))
        assert [(i.key["dept"], i.key["age"]) for i in got] == [("a", 40), ("a", 20), ("b", 30), ("b", 25)]
        assert got[0].key == {"dept": "a", "age": 40, "name": "z"} and got[0].value == {"n": "z"}
        assert b.find(ctx, {"dept": "b", "age": 25})
        assert b.get_current_item(ctx).value == {"n": "w"}
        # prefix bounds in range: all of dept "a"
        assert [i.key["age"] for i in b.range({"dept": "a"}, {"dept": "b"})] == [40, 20]
        assert [i.key["age"] for i in b.range({"dept": "b"}, reverse=True)] == [25, 30]
        with pytest.raises(ValueError):
            b.find(ctx, {"dept": "a"})  # missing index field
        with pytest.raises(TypeError):
            b.find(ctx, "plain")
        info = b.get_store_info()
        assert "dept" in info.index_specification or not info.is_primitive_key


def test_dict_keys_without_spec(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "m", t, BtreeOptions(is_unique=True, is_primitive_key=False))
        assert b.add(ctx, {"b": 1, "a": 2}, "x") and b.add(ctx, {"a": 1}, "y")
        assert b.add(ctx, {"a": 2, "b": 1}, "z") is False
        b.first(ctx)
        assert [i.key for i in b.get_keys(ctx, PagingInfo())] == [{"a": 1}, {"b": 1, "a": 2}]


def test_set_index_specification_on_options(db, ctx):
    o = BtreeOptions(is_unique=True)
    o.set_index_specification(IndexSpecification([IndexFieldSpecification("k", False)]))
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "o", t, o)
        for k in [1, 3, 2]:
            b.add(ctx, {"k": k}, k)
    with db.transaction() as tx:
        assert [i.key["k"] for i in tx.open_btree("o").range()] == [3, 2, 1]


def test_pythonic_layer(db):
    with db.transaction() as tx:
        s = tx.new_btree("fruit")
        s["apple"] = 3
        s["pear"] = {"n": 5}
        s["fig"] = b"\x00bin"
        s.add("kiwi", 1)  # ctx left out
        assert len(s) == 4 and "apple" in s and "nope" not in s
        assert s["pear"] == {"n": 5} and s["fig"] == b"\x00bin" and s.get("nope", 0) == 0
        with pytest.raises(KeyError):
            s["nope"]
        del s["kiwi"]
        with pytest.raises(KeyError):
            del s["kiwi"]
        assert list(s) == ["apple", "fig", "pear"]
        assert [i.key for i in s.range("b", "p")] == ["fig"]
        assert [i.key for i in s.range(reverse=True)] == ["pear", "fig", "apple"]
        assert [i.key for i in s.range(lo="fig")] == ["fig", "pear"]
        assert s.find("f") is False and s.get_current_key().key == "fig"
    with db.transaction(TransactionMode.ForReading) as tx:
        assert tx.open_btree("fruit")["apple"] == 3
        assert tx.store_names() == ["fruit"]


def test_range_large_and_slot_splits(db):
    with db.transaction() as tx:
        s = tx.new_btree("n", BtreeOptions(is_unique=True, slot_length=8))
        assert s.add([Item(i, i * i) for i in range(1000)])
    with db.transaction(TransactionMode.ForReading) as tx:
        s = tx.open_btree("n")
        assert len(s) == 1000
        assert [i.key for i in s.range(100, 300)] == list(range(100, 300))
        assert [i.value for i in s.range(995, reverse=True)] == [i * i for i in range(999, 994, -1)]
        s.first()
        seen = []
        while True:
            page = s.get_keys(PagingInfo(page_size=64))
            seen += [i.key for i in page]
            if len(page) < 64:
                break
        assert seen == list(range(1000))


def test_conflict_is_detected(db, ctx):
    with db.transaction() as tx:
        tx.new_btree("c")["k"] = 0
    t1, t2 = db.transaction(), db.transaction()
    a, b = t1.open_btree("c"), t2.open_btree("c")
    a["k"] = 1
    b["k"] = 2
    t1.commit()
    with pytest.raises(TransactionError):
        t2.commit()
    with db.transaction(TransactionMode.ForReading) as tx:
        assert tx.open_btree("c")["k"] == 1


def test_multithreaded_commits_with_retry(db):
    with db.transaction() as tx:
        s = tx.new_btree("shared", BtreeOptions(is_unique=True, slot_length=16))
        s["counter"] = 0
    threads, per = 8, 25
    errors = []

    def worker(n):
        try:
            for i in range(per):
                # disjoint keys: auto-merge; shared counter: conflicts, retried
                while True:
                    tx = db.transaction()
                    try:
                        s = tx.open_btree("shared")
                        s.add(f"t{n}-{i}", i)
                        s["counter"] = s["counter"] + 1
                        tx.commit()
                        break
                    except ConflictError:
                        continue
                    except BaseException:
                        tx.rollback()
                        raise
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    with db.transaction(TransactionMode.ForReading) as tx:
        s = tx.open_btree("shared")
        assert s["counter"] == threads * per
        assert len(s) == threads * per + 1


def test_threads_disjoint_keys_auto_merge(db):
    with db.transaction() as tx:
        tx.new_btree("m")
    barrier = threading.Barrier(4)
    errors = []

    def worker(n):
        try:
            while True:
                tx = db.transaction()
                s = tx.open_btree("m")
                s.add([Item(f"{n}-{i}", i) for i in range(50)])
                try:
                    barrier.wait(timeout=5)
                except threading.BrokenBarrierError:
                    pass
                try:
                    tx.commit()
                    return
                except ConflictError:
                    continue
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    with db.transaction(TransactionMode.ForReading) as tx:
        assert len(tx.open_btree("m")) == 200
