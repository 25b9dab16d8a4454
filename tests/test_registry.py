"""Registries: registration, lookup, and an error that lists what is registered."""
import pytest

from fastreid.utils.registry import Registry


def test_register_and_get():
    reg = Registry("THING")

    @reg.register()
    def build_a():
        return "a"

    class B:
        pass

    reg.register(B)
    assert reg.get("build_a")() == "a" and reg.get("B") is B
    assert reg.names() == ["B", "build_a"] and "B" in reg


def test_unknown_name_lists_registered_names():
    reg = Registry("BACKBONE")
    reg.register(type("resnet", (), {}))
    reg.register(type("vit", (), {}))
    with pytest.raises(KeyError) as e:
        reg.get("resnt")
    msg = str(e.value)
    assert "resnt" in msg and "BACKBONE" in msg and "resnet, vit" in msg


def test_duplicate_registration_is_an_error():
    reg = Registry("X")
    reg.register(type("a", (), {}))
    with pytest.raises(KeyError, match="already registered"):
        reg.register(type("a", (), {}))
