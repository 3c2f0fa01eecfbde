"""The README, docs/ and source comments point at files that exist and show usable examples."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tidings.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
SOURCES = sorted((ROOT / "src" / "tidings").rglob("*.py"))
MARKDOWN_LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)#\s]+)")
# A file name in prose or a comment: docs/configuration.md, DESIGN.md.
MENTIONED_DOC = re.compile(r"(?<![\w/.-])((?:docs/)?[A-Za-z][\w-]*\.md)\b")


def test_markdown_links_resolve() -> None:
    missing = [
        f"{doc.relative_to(ROOT)}: {target}"
        for doc in DOCS
        for target in MARKDOWN_LINK.findall(doc.read_text())
        if not (doc.parent / target).exists()
    ]
    assert not missing, missing


def test_mentioned_documents_exist() -> None:
    missing = []
    for path in [*DOCS, *SOURCES]:
        for name in MENTIONED_DOC.findall(path.read_text()):
            places = (path.parent / name, ROOT / name, ROOT / "docs" / name)
            if not any(place.exists() for place in places):
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, missing


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_readme_config_example_is_not_the_public_dev_app(tmp_path: Path) -> None:
    # The example listens on every interface: with the public development credentials it
    # would start with the loud "do not expose this" warning.
    example = re.search(r"```toml\n(.*?)```", readme_section("Configuration"), re.S)
    assert example is not None
    config = tmp_path / "tidings.toml"
    config.write_text(example.group(1))
    tomllib.loads(example.group(1))
    settings = load_settings(config, env={})
    assert settings.host == "0.0.0.0"
    assert not settings.uses_dev_app


def test_readme_client_snippets_keep_the_http_fallback() -> None:
    # enabledTransports: ['ws'] turns off the xhr fallbacks the README advertises, and
    # without httpHost pusher-js sends them to Pusher's own hosts.
    for block in re.findall(r"```js\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        assert "enabledTransports" not in block, block
        if "wsHost" in block:
            assert "httpHost" in block, block
