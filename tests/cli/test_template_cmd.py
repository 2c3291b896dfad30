"""`mailprime template create|list|show|preview|check|delete`: the real command against a
database made by `init`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import DataDir

pytestmark = pytest.mark.slow  # runs the real command

GOOD = ("<html><head><style>p { color: red }</style></head><body><p>Hi {{ name }} from "
        "{{ attributes.city | default('nowhere') }}</p><a href=\"{{ unsubscribe_url }}\">"
        "Unsubscribe</a><p>{{ postal_address }}</p></body></html>")


def write(data_dir: DataDir, name: str, text: str) -> Path:
    path = data_dir.root / name
    path.write_text(text, encoding="utf-8")
    return path


def with_postal_address(data_dir: DataDir) -> None:
    with data_dir.config.open("a", encoding="utf-8") as f:
        f.write('\n[marketing]\npostal_address = "1 Main St, Springfield"\n')


def test_create_list_show_preview_check_delete(data_dir: DataDir) -> None:
    with_postal_address(data_dir)
    html = write(data_dir, "news.html", GOOD)
    made = data_dir.cli("template", "create", "news", "--subject", "Hi {{ name }}",
                        "--html", str(html))
    assert made.code == 0 and "template news created" in made.text, made.text
    again = data_dir.cli("template", "create", "news", "--subject", "x", "--html", str(html))
    assert again.code == 1 and "already exists" in again.text
    listed, shown = data_dir.cli_many(["template", "list"], ["template", "show", "news"])
    assert "news" in listed.text and "from HTML" in listed.text and "1 template(s)" in listed.text
    assert "Hi {{ name }}" in shown.text and "{{ unsubscribe_url }}" in shown.text
    sample = json.dumps({"email": "ann@b.test", "name": "Ann <b>", "attributes": {"city": "Oslo"}})
    out = data_dir.root / "preview.html"
    preview = data_dir.cli("template", "preview", "news", "--contact-json", sample,
                           "--out", str(out))
    assert preview.code == 0, preview.text
    assert "Subject: Hi Ann <b>" in preview.text and "Hi Ann <b> from Oslo" in preview.text
    page = out.read_text(encoding="utf-8")
    assert "Ann &lt;b&gt;" in page and '<p style="color: red;">' in page
    checked = data_dir.cli("template", "check", "news")
    assert checked.code == 0 and "no problems" in checked.text, checked.text
    assert "CSS inlined once" in checked.text
    gone = data_dir.cli("template", "delete", "news")
    assert gone.code == 0 and "deleted" in gone.text
    assert "0 template(s)" in data_dir.cli("template", "list").text


def test_errors_are_reported_with_part_and_line(data_dir: DataDir) -> None:
    broken = write(data_dir, "broken.html", "<p>ok</p>\n\n<p>{{ name }</p>\n")
    made = data_dir.cli("template", "create", "broken", "--subject", "s", "--html", str(broken))
    assert made.code == 1 and "html, line 3" in made.text and "does not compile" in made.text
    lax = write(data_dir, "lax.html", "<p>{{ nmae }}</p>\n<p>{{ attributes.zip }}</p>")
    assert data_dir.cli("template", "create", "lax", "--subject", "s", "--html", str(lax)).code == 0
    checked = data_dir.cli("template", "check", "lax")
    assert checked.code == 1
    for words in ("html, line 1: unknown merge field 'nmae'", "html, line 2: attributes.zip",
                  "does not render with a sample contact", "no postal address is configured"):
        assert words in checked.text, checked.text
    missing = data_dir.cli("template", "preview", "nope")
    assert missing.code == 1 and "no template named 'nope'" in missing.text


def test_every_subcommand_has_help(data_dir: DataDir) -> None:
    results = data_dir.cli_many(*[["template", sub, "--help"] for sub in
                                  ("create", "list", "show", "preview", "check", "delete")])
    assert all(r.code == 0 and "Usage" in r.text for r in results)
