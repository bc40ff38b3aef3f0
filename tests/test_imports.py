"""Every module of the project imports: a syntax error in a script no other test runs still fails CI."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ("codec", "server", "training", "bench")
MODULES = [
    name
    for package in PACKAGES
    for name in [package]
    + [
        f"{package}.{m.name}"
        for m in pkgutil.iter_modules(importlib.import_module(package).__path__)
        if m.name != "__main__"
    ]
]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
