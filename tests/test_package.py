"""The package's public names survive every submodule being imported (the lazy ``__init__``)."""

import importlib
import pkgutil
import types

import vaekit


def test_public_names_are_what_they_say_after_all_submodules_are_imported():
    for info in pkgutil.walk_packages(vaekit.__path__, "vaekit."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    for name, (module, attr) in vaekit._EXPORTS.items():
        value = getattr(vaekit, name)
        if attr is None:
            assert isinstance(value, types.ModuleType), name
        else:
            # a submodule of the same name must not shadow the function or class
            assert not isinstance(value, types.ModuleType), f"vaekit.{name} is a module, not {attr}"
            assert value is getattr(importlib.import_module(module, "vaekit"), attr)
    assert callable(vaekit.evaluate) and callable(vaekit.fit) and callable(vaekit.impute)
