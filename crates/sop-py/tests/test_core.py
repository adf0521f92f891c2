"""sop4py core API and observed semantics."""
import pytest

import sop
from sop import (BtreeOptions, Context, Database, DatabaseOptions, DatabaseType, Item, PagingInfo,
                 PagingDirection, TransactionMode, ValueDataSize, BtreeError, TransactionError)


def seed(db, ctx, keys, name="s", options=None):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, name, t, options)
        assert b.add(ctx, [Item(k, f"v{k}") for k in keys])


def keys_of(items):
    return [i.key for i in items]


def test_add_find_navigate(db, ctx):
    t = db.begin_transaction(ctx)
    b = db.new_btree(ctx, "s", t)
    assert b.add(ctx, "b", 1)
    assert b.add(ctx, Item(key="d", value={"x": [1, 2]}))
    assert b.add(ctx, "b", 9) is False  # duplicate in a unique store
    assert b.add_if_not_exists(ctx, "d", 0) is False
    assert b.upsert(ctx, "b", 2) is True
    assert b.update(ctx, "zz", 1) is False
    assert b.count() == 2 and b.is_unique()
    assert b.find(ctx, "b") and b.get_current_item(ctx).value == 2
    assert b.find(ctx, "c") is False and b.get_current_key(ctx).key == "d"
    assert b.find(ctx, "z") is False and b.get_current_key(ctx).key == "d"
    assert b.first(ctx) and b.get_current_key(ctx).key == "b"
    assert b.get_current_key(ctx).value is None
    assert b.next(ctx) and b.get_current_item(ctx).value == {"x": [1, 2]}
    assert b.next(ctx) is False and b.get_current_key(ctx).key is None
    assert b.get_current_key(ctx).id == sop.NIL_UUID
    assert b.last(ctx) and b.previous(ctx) and b.get_current_key(ctx).key == "b"
    t.commit(ctx)
    t.commit(ctx)  # second commit is silent
    t.rollback(ctx)


def test_find_with_id_and_duplicates(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "dup", t, BtreeOptions(is_unique=False))
        assert not b.is_unique()
        assert b.add(ctx, "a", 1) and b.add(ctx, "a", 2) and b.add(ctx, "b", 3)
        assert b.count() == 3
        b.first(ctx)
        items = b.get_items(ctx, PagingInfo(page_size=10))
        assert keys_of(items) == ["a", "a", "b"]
        second = items[1]
        assert b.find_with_id(ctx, "a", second.id)
        assert b.get_current_item(ctx).value == second.value
        assert b.find(ctx, "a", True) and b.get_current_item(ctx).id == items[0].id


def test_values_of_many_types_and_bytes(db, ctx):
    vals = {"s": "text", "i": 7, "f": 1.5, "l": [1, "2", None], "d": {"a": {"b": 1}}, "n": None,
            "by": b"\x00\x01raw", "t": True}
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "v", t)
        for k, v in vals.items():
            assert b.add(ctx, k, v)
    with db.begin_transaction(ctx, TransactionMode.ForReading) as t:
        b = db.open_btree(ctx, "v", t)
        got = b.get_values(ctx, [Item(k) for k in vals])
        assert {i.key: i.value for i in got} == vals


def test_add_without_value_is_none(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        assert b.add(ctx, "k")
        assert b.find(ctx, "k") and b.get_current_item(ctx).value is None


def test_key_order_numbers_before_strings(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        for k in ["d", 5, "a", -1.5, 10, 2**70, -(2**64), 3.25, b"b", ""]:
            assert b.add(ctx, k, 0)
        assert b.add(ctx, 5.0, 0) is False  # 5 == 5.0
        b.first(ctx)
        got = keys_of(b.get_keys(ctx, PagingInfo(page_size=100)))
        assert got == [-(2**64), -1.5, 3.25, 5, 10, 2**70, "", "a", "d", b"b"]


def test_batch_semantics(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        assert b.add(ctx, []) is True
        assert b.add(ctx, [Item("a", 1), Item("b", 2)])
        assert b.add(ctx, [Item("c", 3), Item("a", 9), Item("d", 4)]) is False
        assert b.count() == 4 and b.get_values(ctx, Item("a"))[0].value == 1
        assert b.remove(ctx, ["a", "nope", "b"]) is False
        assert b.count() == 2
        assert b.update(ctx, [Item("c", 30), Item("d", 40)])
        assert b.upsert(ctx, [Item("c", 300), Item("e", 5)])
        assert b.remove(ctx, "zz") is False and b.remove(ctx, "e") is True
        got = b.get_values(ctx, [Item("c"), Item("missing"), Item("d")])
        assert [(i.key, i.value) for i in got] == [("c", 300), ("missing", None), ("d", 40)]
        assert got[1].id == sop.NIL_UUID


def test_count_includes_uncommitted(db, ctx):
    seed(db, ctx, ["a", "b"])
    with db.begin_transaction(ctx) as t:
        b = db.open_btree(ctx, "s", t)
        b.add(ctx, "c", 1)
        assert b.count() == 3


def test_paging_forward_wraps_around(db, ctx):
    seed(db, ctx, [f"k{i}" for i in range(5)])
    with db.begin_transaction(ctx, TransactionMode.ForReading) as t:
        b = db.open_btree(ctx, "s", t)
        assert keys_of(b.get_keys(ctx, PagingInfo(page_size=2))) == ["k0", "k1"]
        assert keys_of(b.get_keys(ctx, PagingInfo(page_size=2))) == ["k2", "k3"]
        assert keys_of(b.get_items(ctx, PagingInfo(page_size=2))) == ["k4"]
        assert b.get_current_key(ctx).key is None
        page = b.get_items(ctx, PagingInfo(page_size=2))
        assert keys_of(page) == ["k0", "k1"] and page[0].value == "vk0"
        assert all(i.value is None for i in b.get_keys(ctx, PagingInfo(page_size=2)))


def test_paging_backward_offset_fetch_count(db, ctx):
    seed(db, ctx, [f"k{i}" for i in range(5)])
    with db.begin_transaction(ctx, TransactionMode.ForReading) as t:
        b = db.open_btree(ctx, "s", t)
        assert b.last(ctx)
        got = b.get_keys(ctx, PagingInfo(page_size=3, direction=PagingDirection.Backward))
        assert keys_of(got) == ["k4", "k3", "k2"]
        assert b.first(ctx)
        assert keys_of(b.get_keys(ctx, PagingInfo(page_offset=1, page_size=2))) == ["k2", "k3"]
        assert b.first(ctx)
        assert keys_of(b.get_items(ctx, PagingInfo(page_size=2, fetch_count=4))) == ["k0", "k1", "k2", "k3"]
        assert b.last(ctx)
        got = b.get_items(ctx, PagingInfo(page_size=10, direction=1))
        assert keys_of(got) == ["k4", "k3", "k2", "k1", "k0"]
        with pytest.raises(BtreeError):
            b.get_items(ctx, PagingInfo(page_size=-1))


def test_paging_empty_store(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "e", t)
        assert not b.get_items(ctx, PagingInfo())
        assert b.first(ctx) is False and b.last(ctx) is False


def test_rollback_discards_and_removes_new_store(db, ctx):
    t = db.begin_transaction(ctx)
    b = db.new_btree(ctx, "gone", t)
    b.add(ctx, "a", 1)
    t.rollback(ctx)
    t.rollback(ctx)  # silent
    t2 = db.begin_transaction(ctx)
    with pytest.raises(BtreeError, match="store not found"):
        db.open_btree(ctx, "gone", t2)
    b2 = db.new_btree(ctx, "x", t2)  # the transaction stays usable
    b2.add(ctx, "k", 1)
    t2.commit(ctx)


def test_with_block_rolls_back_on_exception(db, ctx):
    seed(db, ctx, ["a"])
    with pytest.raises(RuntimeError):
        with db.begin_transaction(ctx) as t:
            b = db.open_btree(ctx, "s", t)
            b.add(ctx, "b", 1)
            b.remove(ctx, "a")
            raise RuntimeError("boom")
    with db.begin_transaction(ctx, TransactionMode.ForReading) as t:
        b = db.open_btree(ctx, "s", t)
        assert b.count() == 1 and b.find(ctx, "a")


def test_use_after_commit_and_read_only_errors(db, ctx):
    seed(db, ctx, ["a"])
    t = db.begin_transaction(ctx)
    b = db.open_btree(ctx, "s", t)
    t.commit(ctx)
    with pytest.raises(BtreeError):
        b.add(ctx, "z", 1)
    with pytest.raises(TransactionError):  # BtreeError is a TransactionError
        b.find(ctx, "a")
    r = db.begin_transaction(ctx, TransactionMode.ForReading)
    rb = db.open_btree(ctx, "s", r)
    with pytest.raises(BtreeError, match="not for writing"):
        rb.add(ctx, "z", 1)
    r.rollback(ctx)


def test_new_btree_existing_opens_and_errors(db, ctx):
    seed(db, ctx, ["a"], options=BtreeOptions(is_unique=True, slot_length=4))
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t, BtreeOptions(is_unique=False, slot_length=100))
        assert b.is_unique() and b.count() == 1
        info = b.get_store_info()
        assert info.name == "s" and info.slot_length == 4 and info.is_unique
        with pytest.raises(BtreeError, match="empty"):
            db.new_btree(ctx, "", t)
        with pytest.raises(BtreeError, match="store not found"):
            db.open_btree(ctx, "nope", t)


def test_slot_length_clamped_and_value_size(db, ctx):
    with db.begin_transaction(ctx) as t:
        for name, n, want in [("z", 0, 96), ("one", 1, 2), ("big", 100000, 20000), ("odd", 7, 8)]:
            o = BtreeOptions(slot_length=n, description="d")
            o.set_value_data_size(ValueDataSize.Medium)
            b = db.new_btree(ctx, name, t, o)
            info = b.get_store_info()
            assert info.slot_length == want and info.description == "d"
            assert not info.is_value_data_in_node_segment
            b.add(ctx, "k", "v" * 1000)
    with db.begin_transaction(ctx) as t:
        assert db.open_btree(ctx, "odd", t).get_values(ctx, Item("k"))[0].value == "v" * 1000


def test_remove_btree_and_setup_get_options(tmp_path, ctx):
    path = str(tmp_path / "x")
    opts = DatabaseOptions(stores_folders=[path])
    Database.setup(ctx, opts)
    got = Database.get_options(ctx, path)
    assert got.type == DatabaseType.Standalone and got.stores_folders == [path]
    with pytest.raises(Exception):
        Database.get_options(ctx, str(tmp_path / "nothing"))
    db = Database(opts)
    seed(db, ctx, ["a"])
    db.remove_btree(ctx, "s")
    with db.begin_transaction(ctx) as t:
        with pytest.raises(BtreeError):
            db.open_btree(ctx, "s", t)


def test_two_database_objects_share_folder(tmp_path, ctx):
    path = str(tmp_path / "db")
    a = Database(DatabaseOptions(stores_folders=[path]))
    seed(a, ctx, ["k"])
    b = Database(DatabaseOptions(stores_folders=[path]))
    with b.begin_transaction(ctx, TransactionMode.ForReading) as t:
        assert b.open_btree(ctx, "s", t).count() == 1


def test_unavailable_backends_rejected(tmp_path, ctx):
    # Clustered mode with Redis works (tests/test_clustered.py); Cassandra, replication and
    # erasure coding do not exist in SOP-rs.
    ec = {"": sop.ErasureCodingConfig(2, 1, [str(tmp_path / "d1"), str(tmp_path / "d2"), str(tmp_path / "d3")])}
    for o in [DatabaseOptions(type=DatabaseType.Clustered, stores_folders=[str(tmp_path)], keyspace="ks"),
              DatabaseOptions(stores_folders=[str(tmp_path)], erasure_config=ec),
              DatabaseOptions(stores_folders=[str(tmp_path / "a"), str(tmp_path / "b")])]:
        with pytest.raises(sop.ClusteredModeNotAvailableError, match="not available yet"):
            Database(o).begin_transaction(ctx)


def test_standalone_ignores_redis_config(tmp_path, ctx):
    # sop4py uses redis_config in standalone mode only as a cache; SOP-rs needs no Redis there.
    db = Database(DatabaseOptions(stores_folders=[str(tmp_path / "db")],
                                  redis_config=sop.RedisCacheConfig(address="127.0.0.1:1")))
    seed(db, ctx, ["k"])
    with db.begin_transaction(ctx, TransactionMode.ForReading) as t:
        assert db.open_btree(ctx, "s", t).count() == 1


def test_bad_input_raises(db, ctx):
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "s", t)
        with pytest.raises(TypeError):
            b.add(ctx, [1, 2], "list key")  # list as batch of non-items
        with pytest.raises(TypeError):
            b.add(ctx, object(), 1)
        with pytest.raises(TypeError):
            b.add(ctx, "k", object())  # not JSON
        with pytest.raises(ValueError):
            b.add(ctx, float("nan"), 1)
        with pytest.raises(ValueError):
            b.add(ctx, 2**200, 1)
        with pytest.raises(TypeError):
            b.add(ctx, {"a": 1}, 1)  # dict key in a primitive store
        with pytest.raises(ValueError):
            b.find_with_id(ctx, "k", "not-a-uuid")
        with pytest.raises(ValueError):
            db.begin_transaction(ctx, 7)
    with pytest.raises(TransactionError):
        sop.Transaction()
    c = Context()
    c.cancel()
    assert not c.is_valid() and c.error()
    with pytest.raises(TransactionError):
        db.begin_transaction(c)


def test_durability_across_close(tmp_path, ctx):
    path = str(tmp_path / "d")
    db = Database(DatabaseOptions(stores_folders=[path]))
    seed(db, ctx, ["a", "b"])
    db.close()
    db2 = Database(DatabaseOptions(stores_folders=[path]))
    with db2.begin_transaction(ctx, TransactionMode.ForReading) as t:
        assert db2.open_btree(ctx, "s", t).count() == 2


def test_logger_and_exports():
    sop.Logger.configure(sop.LogLevel.Warn)
    assert TransactionMode.NoCheck == 0 and TransactionMode.ForWriting == 1 and TransactionMode.ForReading == 2
    assert issubclass(BtreeError, TransactionError)
    assert sop.__version__


def test_value_json_fast_paths_round_trip(db, ctx):
    # str / int / bool values are JSON-coded in Rust; every shape must read back unchanged.
    vals = ["", 'a"b', "back\\slash", "nl\n\t\r\x01\x1f\x7f", "h\u00e9llo \u2603 \U0001F600", "01", "\ud800",
            0, -1, 10**18, -(10**18), 10**30, -0.0, 1.5, 1e16, True, False, None, [1, "x"], {"a": [1]}, b"raw"]
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "fast", t)
        assert b.add(ctx, [Item(key=i, value=v) for i, v in enumerate(vals)])
    with db.begin_transaction(ctx, sop.TransactionMode.ForReading) as t:
        b = db.new_btree(ctx, "fast", t)
        got = [it.value for it in b.get_values(ctx, [Item(key=i) for i in range(len(vals))])]
        for v, g in zip(vals, got):
            assert v == g and type(v) is type(g), (v, g)
        assert b.get_values(ctx, Item(key=1))[0].value == 'a"b'
    with db.begin_transaction(ctx) as t:
        b = db.new_btree(ctx, "fast", t)
        assert b.remove(ctx, 0) and b.remove(ctx, [1, 2]) and not b.remove(ctx, [3, 99])
