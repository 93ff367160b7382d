"""Imports point one way: the shared core knows no component, the ingest edge no database.

The import graph (grimp, from the source; imports inside functions count) is checked
for chains, direct or through other modules, that break a layer rule.
"""

from __future__ import annotations

from functools import cache

import grimp
import pytest

COMPONENTS = ("ingest", "processors", "dashboard")
UPWARD = (*COMPONENTS, "tools", "bench", "tests")
# `python -m vidpulse` runs the command line: the one module of the core that may
# reach up (the program, never imported). The tools themselves live in `tools`.
ENTRY = "vidpulse.__main__"


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("vidpulse", *UPWARD, include_external_packages=True, cache_dir=None)


def core_modules() -> list[str]:
    """Every module of the vidpulse package but the tools: new modules are core by default."""
    return sorted(m for m in graph().find_descendants("vidpulse") | {"vidpulse"} if m != ENTRY)


def chains(importer: str, imported: str) -> list[str]:
    """Each shortest import chain from package `importer` to package `imported`, readable."""
    found = graph().find_shortest_chains(importer=importer, imported=imported, as_packages=True)
    return [" -> ".join(chain) for chain in sorted(found)]


def reaches(module: str, package: str) -> list[str]:
    """The import chains from the one module `module` to any module of `package`."""
    targets = sorted({package} | graph().find_descendants(package))
    found = (graph().find_shortest_chain(importer=module, imported=t) for t in targets)
    return [" -> ".join(chain) for chain in found if chain]


@pytest.mark.parametrize("module", core_modules())
def test_core_module_imports_no_component(module: str) -> None:
    """A shared core module reaches no ingest, processors, dashboard, bench or tests module."""
    assert [c for upper in UPWARD for c in reaches(module, upper)] == []


@pytest.mark.parametrize(
    ("component", "forbidden"),
    [
        ("ingest", ("psycopg", "processors", "dashboard", "tools", "bench", "tests")),
        ("processors", ("ingest", "dashboard", "tools", "bench", "tests")),
        ("dashboard", ("ingest", "tools", "bench", "tests")),
        ("tools", ("bench", "tests")),
    ],
)
def test_component_imports_only_downward(component: str, forbidden: tuple[str, ...]) -> None:
    """ingest needs no database or consumer; processors and dashboard never the ingest."""
    assert [c for other in forbidden for c in chains(component, other)] == []


def test_the_graph_sees_imports_inside_functions_and_through_other_modules() -> None:
    """The checks would catch a lazy import and an indirect one (here in a tool, allowed)."""
    assert graph().direct_import_exists(importer="tools.cli", imported="ingest.server")
    [chain] = graph().find_shortest_chains(
        importer="tools.supervisor", imported="psycopg", as_packages=True
    )
    assert len(chain) > 2  # supervisor -> processors.registry -> ... -> psycopg


def test_the_entry_point_is_a_module_of_the_package() -> None:
    """The one exemption names a real module, so it cannot go stale."""
    assert ENTRY in graph().find_descendants("vidpulse")


@pytest.mark.parametrize("package", ["ingest"])
def test_package_has_no_import_cycle(package: str) -> None:
    """No two modules of the package import each other, directly or through others.

    grimp names the imports whose removal would leave the package's modules acyclic:
    none, when nothing there goes round in a circle.
    """
    assert graph().nominate_cycle_breakers(package) == set()


def test_the_cycle_check_would_see_a_cycle() -> None:
    """The check above is not blind: two modules importing each other, through a third."""
    cyclic = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        cyclic.add_module(module)
    cyclic.add_import(importer="pkg.a", imported="pkg.b")
    cyclic.add_import(importer="pkg.b", imported="pkg.c")
    cyclic.add_import(importer="pkg.c", imported="pkg.a")
    assert cyclic.nominate_cycle_breakers("pkg") != set()
