"""`hw3 new plugin NAME`: a plugin package that installs, registers and passes its own tests.

The files come from `runner/templates/plugin/`: every `*.tmpl` there is written with its
`{{placeholders}}` filled in and `.tmpl` dropped; a `PACKAGE` folder becomes the package name.
"""

from __future__ import annotations

import re
from pathlib import Path

from runner.errors import Hw3Error

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "plugin"
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
MAX_NAME = 40


def names(name: str) -> dict[str, str]:
    """What the templates fill in for plugin `name`, such as my-method: the method and entry-point
    name, the distribution (hw3-my-method), the package (hw3_my_method) and the class (MyMethod)."""
    from runner.hookspecs import PLUGIN_API_VERSION
    from runner.version import __version__

    words = re.split(r"[-_]", name)
    return {
        "name": name,
        "dist": f"hw3-{name.replace('_', '-')}",
        "package": f"hw3_{name.replace('-', '_')}",
        "class": "".join(w.capitalize() for w in words),
        "hw3_version": __version__,
        "api": PLUGIN_API_VERSION,
    }


def check_name(name: str) -> None:
    from runner.runs.plugins import builtin_names

    if not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        raise Hw3Error(
            f"plugin name {name!r}: use lowercase letters and digits, words joined by '-' or '_', "
            f"starting with a letter and at most {MAX_NAME} characters (such as my-method)"
        )
    if name in builtin_names():
        raise Hw3Error(f"plugin name '{name}' is taken by a built-in of hw3; choose another name")


def render(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)


def new_plugin(name: str, parent: Path | str = ".") -> Path:
    """Write the package for plugin `name` into `parent/name` and return that folder."""
    check_name(name)
    target = Path(parent) / name
    if target.exists():
        raise Hw3Error(f"{target} already exists; choose another name or another --dir")
    values = names(name)
    files = {}
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        rel = template.relative_to(TEMPLATES).with_suffix("")  # drops .tmpl
        rel = Path(*(values["package"] if part == "PACKAGE" else part for part in rel.parts))
        files[target / rel] = render(template.read_text(), values)
    if not files:
        raise Hw3Error(f"no templates in {TEMPLATES}; reinstall hw3")
    for path, text in files.items():  # everything rendered first: a bad template writes nothing
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target
