"""The README holds what it promises: every Python example that needs neither the network nor a GPU runs, in a
fresh interpreter, in a folder holding what the README's earlier commands would have written; and every
`bnas_zoo.X(...)` / `bnas_zoo.X.Y(...)` it names resolves after a plain `import bnas_zoo`."""
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'

#: what marks an example that needs the network or a GPU (not run here)
NEEDS_NETWORK = ('hf-hub:', '_from_hub(')
NEEDS_GPU = ('cuda',)


def python_blocks(text: str):
    """(first line number, code) of every ```python block."""
    for m in re.finditer(r'^```python\n(.*?)^```', text, flags=re.S | re.M):
        yield text[:m.start()].count('\n') + 2, m.group(1)


def test_the_public_api_after_a_plain_import():
    names = sorted(set(re.findall(r'\bbnas_zoo((?:\.\w+)+)\(', README.read_text())))
    assert '.export_model' in names and '.kernels.backend' in names
    code = textwrap.dedent(f'''
        import functools, bnas_zoo
        missing = []
        for name in {names!r} + ['.export.export_model', '.hub.publish', '.hub.load_1bit_from_hub']:
            try:
                functools.reduce(getattr, name.strip('.').split('.'), bnas_zoo)
            except AttributeError as e:
                missing.append(f'bnas_zoo{{name}}: {{e}}')
        for name in bnas_zoo.__all__:
            getattr(bnas_zoo, name)
        assert not missing, missing
    ''')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path):
    blocks = list(python_blocks(README.read_text()))
    runnable = [(line, code) for line, code in blocks
                if not any(s in code for s in NEEDS_NETWORK + NEEDS_GPU)]
    assert len(runnable) >= 8 and len(blocks) - len(runnable) <= 2
    (tmp_path / 'blocks.json').write_text(json.dumps(runnable))
    script = textwrap.dedent('''
        import json, sys, traceback
        import timm, torch, bnas_zoo
        from timm.models import save_for_hf
        torch.manual_seed(0)
        # what the README's commands would have written before: converted bnas_d and bnas_a, a trained
        # bnas_mini, a searched cell and a 1-bit file
        for name, folder in (('bnas_d', 'weights/bnas_d'), ('bnas_a', 'weights/bnas_a'), ('bnas_mini', 'runs/mini')):
            m = timm.create_model(name)
            save_for_hf(m, folder, model_args=m.architecture_args(), safe_serialization=True)
            if name == 'bnas_mini':
                bnas_zoo.save_1bit(m, 'model-1bit.safetensors')
        json.dump(bnas_zoo.load_genotype('bnas_cifar').to_dict(), open('cell.json', 'w'))
        failed = []
        for line, code in json.load(open('blocks.json')):
            namespace = dict(timm=timm, torch=torch, bnas_zoo=bnas_zoo, images=torch.randn(2, 3, 64, 64),
                             targets=torch.tensor([0, 1]), criterion=torch.nn.CrossEntropyLoss())
            try:
                exec(compile(code, f'README.md:{line}', 'exec'), namespace)
            except Exception:
                failed.append(f'README.md line {line}:\\n{traceback.format_exc(limit=3)}')
        print('\\n'.join(failed))
        sys.exit(1 if failed else 0)
    ''')
    proc = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
