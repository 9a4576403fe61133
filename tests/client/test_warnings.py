"""Warnings name the user's line: past the library's frames, grpc's and asyncio's; in a thread of the library's,
with no user's line, the library's frame that warned."""

from __future__ import annotations

import functools
import threading
import warnings

import pytest

from interceptors import StackedRetriesWarning
from interceptors.grpc._channel import channel_options

STACKED = [("grpc.enable_retries", 1)]


def test_the_users_line_is_named() -> None:
    with pytest.warns(StackedRetriesWarning) as heard:
        channel_options(STACKED, retries=True)
    assert [w.filename for w in heard] == [__file__]


def test_in_a_thread_with_no_users_line_the_warning_names_the_librarys() -> None:
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        thread = threading.Thread(target=functools.partial(channel_options, STACKED, retries=True))
        thread.start()
        thread.join()
    assert [w.filename.rsplit("/", 2)[-2:] for w in heard] == [["grpc", "_channel.py"]]
