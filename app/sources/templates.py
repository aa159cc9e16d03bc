"""The reference's YAML template files: `{description, type, repositories: [<definition>, ...]}`.

Read with PyYAML's safe_load (plain data only); YAML aliases are refused first, as a handful of them
can stand for a document of gigabytes once expanded.
"""
from __future__ import annotations

import yaml

from app.domain_errors import Invalid

from .definitions import Definition, check

IMPORT_ERROR = "Could not import source repositories: {}"
MAX_REPOSITORIES = 500


def _refused(reason: str) -> Invalid:
    return Invalid(IMPORT_ERROR.format(reason))


def read_template(data: bytes) -> list[Definition]:
    """Every definition of a template file, checked; Invalid (with the reference's text) for anything else."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refused("the template is not UTF-8 text") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise _refused("YAML aliases are not accepted")
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise _refused(f"invalid YAML{where}") from None
    repos = doc.get("repositories") if isinstance(doc, dict) else doc
    if not isinstance(repos, list) or not repos:
        raise _refused("the template holds no repositories list")
    if len(repos) > MAX_REPOSITORIES:
        raise _refused(f"at most {MAX_REPOSITORIES} repositories in one template")
    out = []
    for raw in repos:
        try:
            out.append(check(raw))
        except Invalid as exc:
            raise _refused(exc.message) from None
    return out
