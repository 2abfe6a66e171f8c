from __future__ import annotations

import pytest

from perfmodel.errors import InputError
from perfmodel.units import parse_count, parse_size, parse_size_range


@pytest.mark.parametrize("text,value", [("512MiB", 512 * 2**20), ("8GiB", 8 * 2**30), ("1e9", 1e9), ("4kB", 4000),
                                        ("1.5GB", 1.5e9), ("7", 7), (64, 64)])
def test_sizes(text, value):
    assert parse_size(text) == value


def test_counts_and_ranges():
    assert parse_count("15T", "--tokens") == 15e12
    assert parse_count("2.5M", "--tokens") == 2.5e6
    assert parse_size_range("1KiB..8KiB") == [1024, 2048, 4096, 8192]
    assert parse_size_range("1MiB") == [2**20]


@pytest.mark.parametrize("text", ["12XB", "-5GB", "GB", "1..", "8KiB..1KiB"])
def test_bad_sizes(text):
    with pytest.raises(InputError, match="--bytes"):
        parse_size_range(text)
