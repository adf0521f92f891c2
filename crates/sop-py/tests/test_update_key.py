"""update_key / update_current_key: replace a key by one comparing equal to it."""
import pytest

from sop import (BtreeError, BtreeOptions, IndexFieldSpecification, IndexSpecification, Item,
                 PagingInfo, TransactionMode)


def spec():
    return IndexSpecification(index_fields=[IndexFieldSpecification("dept"),
                                            IndexFieldSpecification("age", ascending_sort_order=False)])


def test_update_key_composite_changes_fields_outside_spec(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "p", t, BtreeOptions(is_unique=True), spec())
        assert b.add(ctx, [Item({"dept": "a", "age": 30, "name": "x"}, {"v": 1}),
                           Item({"dept": "b", "age": 20, "name": "y"}, {"v": 2})])
        assert b.update_key(ctx, Item(key={"dept": "a", "age": 30, "name": "renamed", "extra": [1]}))
        # a list: one missing key -> False, the others are applied
        assert b.update_key(ctx, [Item(key={"dept": "b", "age": 20, "name": "y2"}),
                                  Item(key={"dept": "c", "age": 1, "name": "none"})]) is False
        assert b.count() == 2
    with db.begin_transaction(ctx, TransactionMode.ForReading) as t:
        b = db.open_btree(ctx, "p", t)
        b.first(ctx)
        got = b.get_items(ctx, PagingInfo(page_size=10))
        assert [(i.key, i.value) for i in got] == [
            ({"dept": "a", "age": 30, "name": "renamed", "extra": [1]}, {"v": 1}),
            ({"dept": "b", "age": 20, "name": "y2"}, {"v": 2}),
        ]
        assert b.find(ctx, {"dept": "a", "age": 30}) and b.get_current_key(ctx).key["name"] == "renamed"


def test_update_current_key(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "p", t, BtreeOptions(is_unique=True), spec())
        assert b.add(ctx, {"dept": "a", "age": 5, "name": "x"}, "val")
        assert b.add(ctx, {"dept": "b", "age": 5, "name": "y"}, "val2")
        assert b.find(ctx, {"dept": "a", "age": 5})
        before = b.get_current_item(ctx)
        assert b.update_current_key(ctx, Item(key={"dept": "a", "age": 5, "name": "z"}))
        cur = b.get_current_item(ctx)
        assert cur.key == {"dept": "a", "age": 5, "name": "z"} and cur.value == "val" and cur.id == before.id
        # a key that would change the order: False, nothing changes
        assert b.update_current_key(ctx, Item(key={"dept": "a", "age": 6, "name": "q"})) is False
        assert b.get({"dept": "a", "age": 5}) == "val"
        assert b.find(ctx, {"dept": "a", "age": 5}) and b.get_current_key(ctx).key["name"] == "z"
        # off the end: no current item
        assert b.last(ctx) and b.next(ctx) is False
        assert b.update_current_key(ctx, Item(key={"dept": "b", "age": 5, "name": "w"})) is False
        # ctx may be left out
        assert b.find({"dept": "b", "age": 5})
        assert b.update_current_key(Item(key={"dept": "b", "age": 5, "name": "w"}))
    with db.transaction(TransactionMode.ForReading) as tx:
        b = tx.open_btree("p")
        assert [it.key["name"] for it in b.range()] == ["z", "w"]


def test_update_key_primitive_and_duplicates_by_id(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "d", t, BtreeOptions(is_unique=False))
        assert b.add(ctx, [Item("a", 1), Item("a", 2), Item("b", 3)])
        assert b.update_key(ctx, Item(key="a"))  # equal key: found and kept
        assert b.update_key(ctx, Item(key="zz")) is False
        b.first(ctx)
        items = b.get_items(ctx, PagingInfo(page_size=10))
        assert b.update_key(ctx, Item(key="a", id=items[1].id))
        assert b.update_key(ctx, [Item(key="a", id="11111111-1111-1111-1111-111111111111")]) is False
        assert b.find(ctx, "b") and b.update_current_key(ctx, Item(key="b"))
        assert b.update_current_key(ctx, Item(key="c")) is False
        b.first(ctx)
        after = b.get_items(ctx, PagingInfo(page_size=10))
        assert [(i.key, i.value, i.id) for i in after] == [(i.key, i.value, i.id) for i in items]


def test_update_key_read_only_raises(db, ctx):
    with db.begin_transaction(ctx) as t:
        db.new_btree(ctx, "s", t).add(ctx, "k", 1)
    t = db.begin_transaction(ctx, TransactionMode.ForReading)
    b = db.open_btree(ctx, "s", t)
    with pytest.raises(BtreeError):
        b.update_key(ctx, Item(key="k"))
    t.rollback(ctx)
