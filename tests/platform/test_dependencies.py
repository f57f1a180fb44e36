"""Every third-party module `causalrec` imports is declared in pyproject.toml.

Declared means named in ``[project] dependencies`` or in an ``[project.optional-dependencies]``
extra; being installed because another dependency pulls it in does not count.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the stdlib from Python 3.11")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "causalrec"

_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def normalise(name: str) -> str:
    """A distribution name per PEP 503: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """``"ray[tune,serve]>=2.50; python_version > '3.9'"`` -> ``"ray"`` (normalised)."""
    match = _REQUIREMENT_NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a PEP 508 requirement: {requirement!r}")
    return normalise(match.group(1))


def declared_distributions(pyproject: Mapping) -> tuple[set[str], dict[str, set[str]]]:
    """The runtime dependencies and, per extra, the optional ones (normalised names)."""
    project = pyproject["project"]
    runtime = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        extra: {requirement_name(r) for r in requirements}
        for extra, requirements in project.get("optional-dependencies", {}).items()
    }
    return runtime, extras


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (also those inside functions)."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.partition(".")[0])
        elif (  # importlib.import_module("name") with a literal name
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            modules.add(node.args[0].value.partition(".")[0])
    return modules


def third_party_imports(
    files: Iterable[tuple[str, str]], own: str = PACKAGE
) -> dict[str, set[str]]:
    """``{module: {file, ...}}`` over ``(file, source)`` pairs, without stdlib and ``own``."""
    found: dict[str, set[str]] = {}
    for name, source in files:
        for module in imported_modules(source):
            if module == own or module in sys.stdlib_module_names:
                continue
            found.setdefault(module, set()).add(name)
    return found


def undeclared(
    imports: Mapping[str, set[str]],
    runtime: set[str],
    extras: Mapping[str, set[str]],
    distributions: Mapping[str, list[str]],
) -> list[str]:
    """One message per imported module whose distribution pyproject.toml does not declare.

    Args:
        imports: ``{module: files importing it}``.
        runtime: Normalised names of ``[project] dependencies``.
        extras: Normalised names of each ``[project.optional-dependencies]`` extra.
        distributions: ``{module: distribution names}`` as
            :func:`importlib.metadata.packages_distributions` gives it.
    """
    optional = set().union(*extras.values()) if extras else set()
    declared = runtime | optional
    problems = []
    for module, files in sorted(imports.items()):
        where = ", ".join(sorted(files))
        dists = distributions.get(module)
        if not dists:
            if normalise(module) in optional:
                continue  # an optional extra that is not installed here
            problems.append(
                f"module {module!r} (imported in {where}) is not installed, so its distribution "
                f"is unknown; declare it in pyproject.toml"
            )
            continue
        names = sorted({normalise(d) for d in dists})
        if not declared.intersection(names):
            problems.append(
                f"module {module!r} (imported in {where}) comes from distribution "
                f"{' or '.join(names)}, which pyproject.toml declares neither in "
                f"[project] dependencies nor in an optional extra"
            )
    return problems


def package_sources(root: Path = ROOT) -> list[tuple[str, str]]:
    return [
        (path.relative_to(root).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted((root / PACKAGE).rglob("*.py"))
    ]


def test_every_import_is_declared():
    runtime, extras = declared_distributions(tomllib.loads((ROOT / "pyproject.toml").read_text()))
    imports = third_party_imports(package_sources())
    assert imports, "found no third-party imports at all: is the package walk broken?"
    problems = undeclared(imports, runtime, extras, importlib.metadata.packages_distributions())
    assert not problems, "\n".join(problems)


# --- the checker itself -------------------------------------------------------------------------

SOURCE = textwrap.dedent(
    """
    from __future__ import annotations
    import os.path
    import numpy.linalg as la
    from . import sibling
    from .sub import thing
    from causalrec.platform import errors
    import causalrec.methods

    def load():
        import yaml
        from requests.adapters import HTTPAdapter
        import mlflow
        import notinstalled
        return importlib.import_module("sklearn.linear_model")
    """
)
FAKE_DISTRIBUTIONS = {
    "numpy": ["numpy"],
    "yaml": ["PyYAML"],
    "requests": ["requests"],
    "sklearn": ["scikit-learn"],
}


def test_collector_finds_absolute_imports_only():
    imports = third_party_imports([("causalrec/fake.py", SOURCE)])
    assert set(imports) == {"numpy", "yaml", "requests", "mlflow", "notinstalled", "sklearn"}
    assert imports["requests"] == {"causalrec/fake.py"}


def test_checker_reports_undeclared_and_missing_modules():
    pyproject = tomllib.loads(
        textwrap.dedent(
            """
            [project]
            name = "fake"
            dependencies = ["NumPy>=1.26", "ray[tune,serve]>=2.50", "PyYAML", "scikit_learn"]
            [project.optional-dependencies]
            mlflow = ["mlflow>=2.10"]
            """
        )
    )
    runtime, extras = declared_distributions(pyproject)
    assert runtime == {"numpy", "ray", "pyyaml", "scikit-learn"}
    imports = third_party_imports([("causalrec/fake.py", SOURCE)])
    problems = undeclared(imports, runtime, extras, FAKE_DISTRIBUTIONS)
    assert len(problems) == 2, problems
    requests_problem, missing_problem = sorted(problems, key=lambda p: "notinstalled" in p)
    # requests comes along with ray, but only a declaration counts
    assert "'requests'" in requests_problem and "causalrec/fake.py" in requests_problem
    assert "distribution requests" in requests_problem
    assert "'notinstalled'" in missing_problem and "causalrec/fake.py" in missing_problem
    assert "not installed" in missing_problem


def test_checker_accepts_a_declared_extra_when_installed():
    imports = {"mlflow": {"causalrec/tracking.py"}}
    assert undeclared(imports, set(), {"mlflow": {"mlflow"}}, {"mlflow": ["mlflow"]}) == []
    problems = undeclared(imports, set(), {}, {"mlflow": ["mlflow"]})
    assert problems and "'mlflow'" in problems[0] and "causalrec/tracking.py" in problems[0]


@pytest.mark.parametrize(
    ("requirement", "name"),
    [
        ("ray[tune,serve]>=2.50", "ray"),
        ("typing_extensions>=4.7", "typing-extensions"),
        ("Foo.Bar ; python_version<'3.11'", "foo-bar"),
        ("scikit-learn", "scikit-learn"),
    ],
)
def test_requirement_names_are_normalised(requirement, name):
    assert requirement_name(requirement) == name
