"""The same storage tests against the local folder and an S3-protocol server (moto over HTTP)."""

import uuid

import pytest

from core.errors import InvalidInput, NotFound
from core.storage import LocalStorage, S3Storage, check_key


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_server")
    return S3Storage("cls-test", f"t-{uuid.uuid4().hex[:8]}", endpoint_url=endpoint, region="us-east-1")


def test_put_get_exists_delete(store):
    store.put("images/a.png", b"abc", "image/png")
    assert store.exists("images/a.png")
    assert store.get("images/a.png") == b"abc"
    with store.open("images/a.png") as handle:
        assert handle.read() == b"abc"
    store.delete("images/a.png")
    assert not store.exists("images/a.png")
    store.delete("images/a.png")  # deleting twice is fine


def test_put_file_copy_and_list(store, tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 1000)
    store.put_file("models/1/best.pt", source)
    store.copy("models/1/best.pt", "models/2/best.pt")
    assert store.get("models/2/best.pt") == b"x" * 1000
    assert sorted(store.list_keys("models/")) == ["models/1/best.pt", "models/2/best.pt"]
    assert sorted(store.list_keys()) == ["models/1/best.pt", "models/2/best.pt"]


def test_missing_object_is_not_found(store):
    with pytest.raises(NotFound):
        store.get("images/missing.png")
    with pytest.raises(NotFound):
        store.copy("images/missing.png", "images/other.png")
    assert not store.exists("images/missing.png")


def test_url_points_at_the_object(store):
    store.put("thumbs/t.jpg", b"jpg")
    url = store.url("thumbs/t.jpg")
    assert "thumbs/t.jpg" in url


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs/path", "a/../../b", "", "a//b", "a\\b", "./a"])
def test_keys_that_escape_are_refused(store, key):
    with pytest.raises(InvalidInput):
        store.put(key, b"x")


def test_check_key_accepts_normal_keys():
    assert check_key("images/0a.jpg") == "images/0a.jpg"


def test_local_write_is_atomic(tmp_path):
    store = LocalStorage(tmp_path / "store")
    store.put("a/b.txt", b"one")
    store.put("a/b.txt", b"two")
    assert store.get("a/b.txt") == b"two"
    assert [p.name for p in (tmp_path / "store" / "a").iterdir()] == ["b.txt"]


def test_list_by_partial_prefix(store):
    store.put("images/ab1.png", b"1")
    store.put("images/ac2.png", b"2")
    assert list(store.list_keys("images/ab")) == ["images/ab1.png"]
