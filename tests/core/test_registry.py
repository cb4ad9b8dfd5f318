from __future__ import annotations

import pytest

from cnnlab.core.errors import CnnlabError
from cnnlab.core.registry import Registry


def test_register_get_list_and_glob():
    r: Registry[int] = Registry("thing")
    r.add("cnn", 1)

    @r.register("cnn-small")
    def builder():
        return 2

    assert r.get("cnn") == 1
    assert r.get("cnn-small") is builder
    assert r.names() == ["cnn", "cnn-small"]
    assert r.names("cnn-*") == ["cnn-small"]
    assert "cnn" in r and "mlp" not in r and len(r) == 2


def test_duplicates_refused_and_unknown_names_listed():
    r: Registry[int] = Registry("thing")
    r.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.add("a", 2)
    with pytest.raises(CnnlabError, match="unknown thing 'b'; choose from: a"):
        r.get("b")
