"""config/README.md: every key of the sweep config, generated from its JSON schema.

``python -m persafl.config_docs --write`` rewrites ``config/README.md`` from
``workflow/schemas/config.schema.yaml``; ``--check`` exits 1 when the file is out of date (a test
does the same), so a key added to the schema is documented by regenerating, never by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
OUTPUT = REPO / "config" / "README.md"

HEADER = """# Config keys

Generated from `workflow/schemas/config.schema.yaml` by `python -m persafl.config_docs --write`
(do not edit by hand; `tests/test_config_docs.py` checks it is current). Every config
(`config.yaml` paper scale, `synthetic.yaml` the default of `make reproduce`, `test.yaml` CI
scale) is validated against the schema before any job runs; unknown keys are errors. A
`<dataset>`, `<partition>` or `<method>` in a key stands for a name listed on its row.

| key | type | default | description |
|---|---|---|---|
"""


def _resolve(node: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` (``#/$defs/NAME``) merged in; the node's own keys win."""
    ref = node.get("$ref")
    if ref is None:
        return dict(node)
    target = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target, schema), **{k: v for k, v in node.items() if k != "$ref"}}


def _type(node: Mapping[str, Any]) -> str:
    if "enum" in node:
        return " | ".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(_type(n) for n in node["oneOf"])
    kind = node.get("type", "")
    if kind == "array" and "items" in node:
        return f"list of {_type(node['items'])}"
    bounds = [
        f"{sign} {node[key]}"
        for key, sign in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in node
    ]
    return f"{kind} {', '.join(bounds)}".strip() if bounds else str(kind)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _placeholder(path: str) -> str:
    """``datasets`` -> ``dataset``, ``method_hp`` -> ``method``: the name a key stands for."""
    last = path.rsplit(".", 1)[-1]
    return last.removesuffix("_hp") if last.endswith("_hp") else last.removesuffix("s")


def _rows(node: Mapping[str, Any], path: str, schema: Mapping[str, Any]) -> list[str]:
    node = _resolve(node, schema)
    rows = []
    if path:
        default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
        description = _cell(node.get("description", ""))
        rows.append(f"| `{path}` | {_cell(_type(node))} | {default} | {description} |")
    props: Mapping[str, Any] = node.get("properties", {})
    refs = {p.get("$ref") for p in props.values()}
    prefix = f"{path}." if path else ""
    if len(props) > 1 and len(refs) == 1 and None not in refs:  # one shape under many names
        names = ", ".join(f"`{n}`" for n in props)
        sub = {**next(iter(props.values())), "description": f"one of {names}"}
        rows += _rows(sub, f"{prefix}<{_placeholder(path)}>", schema)
    else:
        for key, sub in props.items():
            rows += _rows(sub, f"{prefix}{key}", schema)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        sub = {**extra, "description": "any name you choose"}
        rows += _rows(sub, f"{prefix}<{_placeholder(path)}>", schema)
    return rows


def render(schema: Mapping[str, Any]) -> str:
    """The text of config/README.md for ``schema``."""
    return HEADER + "\n".join(_rows(schema, "", schema)) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persafl.config_docs", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"rewrite {OUTPUT.name}")
    mode.add_argument("--check", action="store_true", help="exit 1 if it is out of date")
    args = parser.parse_args(argv)
    text = render(yaml.safe_load(SCHEMA.read_text()))
    if args.write:
        OUTPUT.write_text(text)
        return 0
    if not OUTPUT.is_file() or OUTPUT.read_text() != text:
        print(
            f"error: {OUTPUT} is out of date with {SCHEMA.name}; run python -m "
            "persafl.config_docs --write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
