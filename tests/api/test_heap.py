"""Long-lived objects are frozen out of the collector's passes, once per change of what is served."""

from __future__ import annotations

import gc
import time
import weakref

from fastapi.testclient import TestClient

from velocast.api.heap import HeapSettler


class _Node:
    pass


def test_the_heap_is_settled_once_per_state_and_a_swapped_out_cycle_goes_at_the_next_full_settle() -> None:
    state = ["v1"]
    settler = HeapSettler(lambda: state[0], full_every=3)
    try:
        node = _Node()
        node.me = node  # a reference cycle, as a loaded model may have
        gone = weakref.ref(node)
        settler()
        assert settler.settled == "v1" and gc.get_freeze_count() > 1000
        del node
        gc.collect()
        assert gone() is not None  # frozen: full collections no longer walk (nor free) it
        settler()  # nothing changed: no collection, nothing frozen again
        assert settler.settles == 1 and gone() is not None
        state[0] = "v2"  # a new champion: only the new objects are collected and frozen (no pause)
        settler()
        assert gone() is not None and settler.settled == "v2" and settler.settles == 2
        fresh = _Node()
        fresh.me = fresh
        fresh_gone = weakref.ref(fresh)
        del fresh
        state[0] = "v3"  # the third settle is a full one: every frozen cycle is looked at again
        settler()
        assert gone() is None and fresh_gone() is None
        assert settler.settles == 3 and settler.full_settles == 1 and gc.get_freeze_count() > 1000
    finally:
        HeapSettler.release()
    assert gc.get_freeze_count() == 0


def test_the_api_settles_its_heap_once_the_champion_is_loaded(client: TestClient) -> None:
    heap = client.app.state.heap
    deadline = time.monotonic() + 60
    while heap.settled is None and time.monotonic() < deadline:
        time.sleep(0.1)
    served, _store_version = heap.settled
    assert ("lgbm", None) in {key for key, _ in served}
    assert gc.get_freeze_count() > 10_000
