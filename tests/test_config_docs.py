"""config/README.md is generated from the schema and current (issue 16, item 15)."""

from __future__ import annotations

import copy

import yaml

from persafl import config_docs


def schema() -> dict:
    return yaml.safe_load(config_docs.SCHEMA.read_text())


def test_config_readme_is_current():
    assert config_docs.OUTPUT.read_text() == config_docs.render(schema()), (
        "config/README.md is out of date: run python -m persafl.config_docs --write"
    )
    assert config_docs.main(["--check"]) == 0


def test_every_schema_key_is_documented_including_new_ones():
    changed = copy.deepcopy(schema())
    changed["$defs"]["hp"]["properties"]["adapt_on"] = {
        "type": "string",
        "enum": ["train", "test"],
        "description": "A key added later.",
    }
    changed["properties"]["new_switch"] = {"type": "boolean", "default": True}
    text = config_docs.render(changed)
    assert "`datasets.<dataset>.hp.adapt_on` | `train` \\| `test` |" in text
    assert "`datasets.<dataset>.method_hp.<method>.adapt_on`" in text
    assert "| `new_switch` | boolean | `true` |" in text
    for key in schema()["properties"]:
        assert f"| `{key}` |" in config_docs.OUTPUT.read_text()


def test_license_matches_pyproject_and_catalog_file_parses():
    import tomllib

    repo = config_docs.REPO
    license_name = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["license"]
    assert (repo / "LICENSE").read_text().startswith(f"{license_name['text']} License")
    catalog = yaml.safe_load((repo / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["report"] is True


def test_configs_point_to_docs_inside_the_repository():
    repo = config_docs.REPO
    assert (repo / "docs" / "paper.md").is_file()
    for path in sorted((repo / "config").glob("*.yaml")):
        text = path.read_text()
        assert "docs/paper.md" in text, path
        assert "/work/" not in text and "PAPER.md" not in text, path
