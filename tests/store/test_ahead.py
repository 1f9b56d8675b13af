"""map_ahead: parallel reads consumed in order, never more than `ahead` before the consumer
(what keeps finalize's memory flat in the number of shards)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from layertap.io.ahead import map_ahead


def test_results_come_in_the_items_order_whatever_order_they_finish_in():
    delays = random.Random(0).choices([0, 0.001, 0.005], k=200)

    def slow_square(i):
        time.sleep(delays[i])
        return i * i

    assert list(map_ahead(slow_square, range(200), ahead=8)) == [i * i for i in range(200)]


@pytest.mark.parametrize("ahead", [1, 4, 16])
def test_no_more_than_ahead_items_are_started_before_the_consumer_takes_one(ahead):
    started = 0
    lock = threading.Lock()

    def read(i):
        nonlocal started
        with lock:
            started += 1
        return i

    most_ahead = 0
    for taken, _ in enumerate(map_ahead(read, iter(range(500)), ahead=ahead), start=1):
        time.sleep(0.0005)  # a slow consumer: the reads would run far ahead if unbounded
        with lock:
            most_ahead = max(most_ahead, started - taken)
    assert started == 500
    assert most_ahead == ahead - 1  # the bound is reached (a slow consumer) and never passed


def test_an_error_in_a_read_reaches_the_consumer_at_its_place():
    def read(i):
        if i == 7:
            raise OSError("the store went away")
        return i

    got = []
    with pytest.raises(OSError, match="went away"):
        for value in map_ahead(read, range(20), ahead=4):
            got.append(value)
    assert got == list(range(7))


def test_ahead_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        list(map_ahead(str, range(3), ahead=0))


def test_a_consumer_that_stops_early_does_not_wait_for_the_calls_under_way():
    """Closing it must not block: the garbage collector may close it in any thread, one that
    holds a lock those calls need."""
    release = threading.Event()

    def read(i):
        if i > 0:
            release.wait(30)  # a read that is under way until released
        return i

    reads = map_ahead(read, range(10), ahead=4)
    assert next(reads) == 0
    closer = threading.Thread(target=reads.close)
    closer.start()
    closer.join(10)
    closed_while_reading = not closer.is_alive()
    release.set()
    closer.join()
    assert closed_while_reading
