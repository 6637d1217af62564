"""The house rules of docs/architecture.md that import-linter's layer contracts do not state themselves: no product
module over 400 lines, and no import circle anywhere in the product packages (lazy imports inside functions
included)."""

from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("edgerec", "edge_node", "origin_sync", "models")
MAX_LINES = 400


def test_no_product_module_is_over_400_lines():
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text().splitlines())
        for package in PRODUCT
        for path in (REPO / package).rglob("*.py")
    }
    assert len(sizes) > 50  # the packages were found
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def _circles(imports: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for root in sorted(imports):
        if root in index:
            continue
        work = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_circle():
    graph = grimp.build_graph(*PRODUCT)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    assert len(imports) > 50
    assert _circles(imports) == []
