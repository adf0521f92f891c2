"""Batches read in Rust (write_items / remove_items / get_value_items): the shapes `_pairs`,
`_plain` and `remove` accept must behave as on the one-item paths."""
from dataclasses import dataclass

import pytest

import sop
from sop import Item


@dataclass
class Point:
    x: int
    y: int


class MyItem(Item):
    pass


def test_write_items_shapes(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        # Items, a subclass of Item, (key, value) tuples and dataclass values, mixed.
        assert b.add(ctx, [Item("a", 1), MyItem("b", Point(1, 2)), ("c", b"raw"), Item(key=3)])
        assert b.add_if_not_exists(ctx, [("a", 0), ("d", 4.5)]) is False
        assert b.upsert(ctx, [Item("a", [1, "x"]), ("e", None)])
        assert b.update(ctx, [("d", True), Item("nope", 1)]) is False
        got = {it.key: it.value for it in b.get_values(ctx, ["a", "b", "c", 3, "d", "e", "nope"])}
        assert got == {"a": [1, "x"], "b": {"x": 1, "y": 2}, "c": b"raw", 3: None, "d": True,
                       "e": None, "nope": None}
        assert b.count() == 6


def test_write_items_rejects_bad_entries(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        with pytest.raises(TypeError):
            b.add(ctx, [Item("a", 1), "not an item"])
        with pytest.raises(TypeError):
            b.add(ctx, [("a", 1, 2)])
        with pytest.raises(TypeError):
            b.add(ctx, [Item(object(), 1)])
        # Nothing of a rejected batch is written.
        assert b.count() == 0


def test_remove_items_shapes(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        assert b.add(ctx, [Item(k, k) for k in ["a", "b", "c", "d", "e"]])
        assert b.remove(ctx, [Item("a"), "b"])
        assert b.remove(ctx, ("c",))
        assert b.remove(ctx, Item("d"))
        assert b.remove(ctx, ["e", "zz"]) is False
        assert b.count() == 0


def test_composite_batch(db, ctx):
    spec = sop.IndexSpecification(index_fields=[sop.IndexFieldSpecification("x")])
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "p", t, index_spec=spec)
        assert b.add(ctx, [Item(Point(2, 0), "two"), Item({"x": 1, "y": 9}, "one")])
        got = b.get_values(ctx, [Item({"x": 1}), Item(Point(2, 5)), {"x": 3}])
        assert [(i.key, i.value) for i in got] == [({"x": 1, "y": 9}, "one"),
                                                   ({"x": 2, "y": 0}, "two"),
                                                   ({"x": 3}, None)]
        assert b.remove(ctx, [Item(Point(1, 0)), {"x": 2}])
        assert b.count() == 0


def test_get_values_ids(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "d", t, sop.BtreeOptions(is_unique=False))
        assert b.add(ctx, [Item("k", 1), Item("k", 2)])
        b.find(ctx, "k")
        first = b.get_current_item(ctx)
        b.next(ctx)
        second = b.get_current_item(ctx)
        assert {first.value, second.value} == {1, 2} and first.id != second.id
        got, = b.get_values(ctx, [Item("k")])  # no id: the first duplicate
        assert (got.value, got.id) == (first.value, first.id)
        got = b.get_values(ctx, [Item("k", id=second.id), Item("k", id=second.id.upper()),
                                 Item("k", id=second.id.replace("-", "")), Item("k", id="")])
        assert [i.value for i in got] == [second.value] * 3 + [first.value]
        assert {i.id for i in got[:3]} == {second.id}
        with pytest.raises(ValueError):
            b.get_values(ctx, [Item("k", id="not-a-uuid")])


def test_ids_are_canonical_uuids(db, ctx):
    import uuid

    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        assert b.add(ctx, [Item(i, i) for i in range(50)])
        for it in b.get_values(ctx, list(range(50))):
            assert str(uuid.UUID(it.id)) == it.id and it.id != sop.NIL_UUID


def test_escaping_round_trips(db, ctx):
    odd = ["", "a\x00b", "\x00", "a\x00\x00", 'q"uote', "back\\slash", "nl\n\r\t", "\x01\x1f",
           "é ünïcode ✓", "\U0001f600", "end\x00"]
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        assert b.add(ctx, [Item(k, k) for k in odd])
        assert b.add(ctx, [Item(b"x\x00y", b"\x00\xff")])
        got = b.get_values(ctx, odd + [b"x\x00y"])
        assert [(i.key, i.value) for i in got] == [(k, k) for k in odd] + [(b"x\x00y", b"\x00\xff")]
        b.first(ctx)
        keys = [it.key for it in b.get_keys(ctx, sop.PagingInfo(page_size=100))]
        assert keys == sorted(odd) + [b"x\x00y"]
