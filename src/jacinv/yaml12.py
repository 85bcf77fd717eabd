"""YAML as people write numbers: PyYAML with YAML 1.2's core schema, and duplicate keys refused.

PyYAML follows YAML 1.1, where ``1e-3`` is a string (a float needs a dot), ``yes``/``no``/``on``/
``off`` are booleans, ``017`` is octal and ``1:20`` is sexagesimal.  :func:`load` reads YAML 1.2's
core schema instead: ``1e-3`` and ``5e-4`` are floats, only ``true``/``false`` are booleans, ``017``
is 17.  A mapping that gives a key twice is an error (PyYAML keeps the last one without a word).
"""
from __future__ import annotations

import re

import yaml

BOOL, INT, FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice."""


class Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars and duplicate keys refused."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if first is not key_node.start_mark:
                    raise DuplicateKey(None, None, f"key {key!r} appears twice (first at line {first.line + 1})",
                                       key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (BOOL, INT, FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver(BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
Loader.add_implicit_resolver(INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
Loader.add_implicit_resolver(
    FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                      r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))
Loader.add_constructor(INT, Loader.construct_yaml_int)


def load(text: str):
    """The Python value of the YAML document ``text`` (YAML 1.2 core schema, duplicate keys refused)."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 -- Loader is a SafeLoader
