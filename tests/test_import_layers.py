"""The package's modules depend on each other in one direction: no two modules import each other, directly or
through others (function-level imports count too). The layers (binary.py, network.py, ...) do not know the
fast paths that consume them (kernels/, deploy.py), and the 1-bit file format does not depend on deployment."""
import ast
from pathlib import Path

import bnas_zoo

PACKAGE = Path(bnas_zoo.__file__).parent


def _modules():
    mods = {}
    for path in PACKAGE.rglob('*.py'):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        mods[name] = path
    return mods


def _imports(mods, name, path):
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ''
            for alias in node.names:
                target = f'{base}.{alias.name}' if f'{base}.{alias.name}' in mods else base
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    # the package itself (bnas_zoo/__init__.py re-exports everything) is not a dependency of its modules
    return {m for m in found if m in mods and m != name and m != 'bnas_zoo'}


def _cycle(graph):
    """One import cycle of ``graph`` (a list of module names), or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 'open':
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = 'done'
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_modules_import_each_other_in_one_direction():
    mods = _modules()
    graph = {name: _imports(mods, name, path) for name, path in mods.items()}
    assert 'bnas_zoo.kernels.training' in graph['bnas_zoo'] and 'bnas_zoo.binary' in graph['bnas_zoo.kernels.training']
    assert graph['bnas_zoo.deploy'] and 'bnas_zoo.deploy' in graph['bnas_zoo.packing']  # the check sees lazy imports
    cycle = _cycle({k: v for k, v in graph.items() if k != 'bnas_zoo'})
    assert cycle is None, ' -> '.join(cycle)
