"""Who may read a chunk: readers from acls and back, the narrowest of two acls, principals never a string."""

from __future__ import annotations

import pytest

from streams.state.store import NOBODY_READER, PUBLIC_READER, Access, acl_of, narrowest, readers_of


def test_principals_are_a_list_never_a_string() -> None:
    with pytest.raises(TypeError):
        Access.of("user:bob")
    with pytest.raises(TypeError):
        readers_of("user:bob")
    assert readers_of([]) == [NOBODY_READER] and acl_of(readers_of([])) == () and not Access.of(["a:b"]).may_read(())
    assert narrowest(None, None) is None and narrowest(["b:1", "a:1"], None) == ["a:1", "b:1"]
    assert narrowest(["a:1", "b:1"], ["b:1", "c:1"]) == ["b:1"] and narrowest(["a:1"], ["c:1"]) == []


def test_readers_round_trip_to_the_acl_they_stand_for() -> None:
    assert readers_of(None) == [PUBLIC_READER] and acl_of([PUBLIC_READER]) is None and acl_of(None) is None
    assert readers_of(["user:b", "user:a", "user:b"]) == ["user:a", "user:b"] == list(acl_of(["user:a", "user:b"]))
    assert Access.of(None).may_read(None) and not Access.of(None).may_read(["user:a"])
    assert Access.of(["user:a"]).readers() == (PUBLIC_READER, "user:a")
