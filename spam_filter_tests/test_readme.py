"""The README's Layout section names every module of the package, and nothing that is not there."""

import re

from spam_filter_tests.helpers import PROJECT_ROOT


def _layout_block() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1].splitlines()


def _named_modules() -> set[str]:
    """The package's modules the Layout names, from the lines under `spam_filter/`."""
    named, section, folder = set(), "", ""
    for line in _layout_block():
        match = re.match(r"^( *)(\S+)", line)
        if not match:
            continue
        indent, entry = len(match.group(1)), match.group(2)
        if indent == 0:
            section = entry
        elif section != "spam_filter/":
            continue
        elif indent == 2 and entry.endswith("/"):
            folder = entry
        elif indent == 2:
            folder = ""
            named.add("spam_filter/" + entry)
        else:
            named.add("spam_filter/" + folder + entry)
    return {name for name in named if name.endswith(".py")}


def test_the_layout_names_every_module_of_the_package():
    named = _named_modules()
    modules = {
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / "spam_filter").rglob("*.py")
        if path.name != "__init__.py"
    }
    assert sorted(modules - named) == [], "modules the README's Layout does not name"
    assert sorted(named - modules) == [], "names in the README's Layout that are no module"
