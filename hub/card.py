"""Model cards of published bnas_zoo weights (huggingface_hub's ModelCard with a bnas_zoo template)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from bnas_zoo.profile import ModelProfile

__all__ = ['build_model_card', 'CITATION', 'RECIPE_LABELS']

CITATION = """@article{kim2021bnasv2,
  title   = {BNAS v2: Learning Architectures for Binary Networks with Empirical Improvements},
  author  = {Kim, Dahyun and Singh, Kunal Pratap and Choi, Jonghyun},
  journal = {arXiv preprint arXiv:2110.08562},
  year    = {2021}
}"""

TEMPLATE = """---
{{ card_data }}
---

# {{ repo_id }}

A searched **binary (1-bit, XNOR) network** of the BNAS paper, `{{ architecture }}` in
bnas_zoo: binary weights and activations in every cell, built from the
genotype stored in `config.json`.
{% for line in about %}
{{ line }}
{%- endfor %}
{% if cell_pictures %}
## Cells

{% for pic in cell_pictures -%}
![{{ pic.alt }}]({{ pic.file }})

{% endfor -%}
The searched cells of this network (drawn with `bnas-zoo draw`), left to right: the cell inputs c<sub>k-2</sub> and
c<sub>k-1</sub>, the intermediate nodes, the output c<sub>k</sub> that concatenates them; each edge is labelled with
its operation. Dashed grey edges and nodes are identically zero (the Zeroise operation `none`), dotted ones feed
nothing the output needs: neither is computed. The inter-cell skip adds c<sub>k-1</sub> to the output (through a
float 2x2 convolution in the reduction cell); a double dagger (&Dagger;) marks the convolutions that the last cell
keeps in float.
{% endif %}
## Usage

```python
import timm
import bnas_zoo  # registers the architecture with timm
from bnas_zoo.hub import load_1bit_from_hub

# inference with the published weights ({{ num_classes }} classes{% if dataset %}, {{ dataset }}{% endif %})
model = timm.create_model("hf-hub:{{ repo_id }}", pretrained=True).eval()

# fine-tuning: the same body with a fresh classifier head for your own classes
model = timm.create_model("hf-hub:{{ repo_id }}", pretrained=True, num_classes=<your classes>)

# the 1-bit file alone (packed sign bits + one scale per output channel), for inference
model = load_1bit_from_hub("{{ repo_id }}", deploy=True)  # fast packed-bit inference
```

Fine-tuning on your own images (`my_images/train/<class>/...` and `my_images/val/<class>/...`; the new
head gets as many outputs as there are class folders):

```bash
bnas-train --model hf-hub:{{ repo_id }} --data-dir my_images --head-epochs 2 --output runs/my_model
```

## Files

| file | contents | size |
|---|---|---|
| `model.safetensors` | latent float weights (for training and fine-tuning) | {{ float_size }} |
| `model-1bit.safetensors` | binary convolutions as packed bits + one fp32 scale per output channel; everything else as stored; rebuilds the model alone, outputs identical in eval mode | {{ bit_size }} |
| `config.json` | timm config: architecture, model_args (the genotype itself included), pretrained_cfg | |
{% for pic in cell_pictures -%}
| `{{ pic.file }}` | picture of the {{ pic.alt }} | |
{% endfor %}
## Cost

Input {{ input_size }}. FLOPs = full-precision multiply-adds + binary multiply-adds / 64.

| accounting | parameters (1-bit / 32-bit) | binary MACs | FP MACs | FLOPs | memory | memory saving | theoretical speed-up |
|---|---|---|---|---|---|---|---|
{% for row in cost_rows -%}
| {{ row.label }} | {{ row.params }} | {{ row.binary_macs }} | {{ row.float_macs }} | {{ row.flops }} | {{ row.memory }} | {{ row.saving }} | {{ row.speedup }} |
{% endfor %}
*True* is this network as it runs (the stem, the 2x2 reduction shortcuts, the classifier and two convolutions
of the last cell are full precision, as in the authors' release); the *paper's convention* counts every
convolution but the stem as binary, as the paper's tables do. Parameters: {{ parameters }}.

## Evaluation

{% if eval_rows -%}
| dataset | split | images | top-1 (%) | top-5 (%) | source | command |
|---|---|---|---|---|---|---|
{% for row in eval_rows -%}
| {{ row.dataset }} | {{ row.split }} | {{ row.images }} | {{ row.top1 }} | {{ row.top5 }} | {{ row.source }} | {{ row.command }} |
{% endfor %}
{% for note in eval_notes -%}
{{ note }}
{% endfor %}
{%- else -%}
No evaluation results were given when these weights were published.
{%- endif %}

## Training

{{ training }}

## Intended use and limits

Image classification and a starting point for fine-tuning binary networks on edge devices. Created with
timm, the model computes its binary convolutions as float XNOR emulation (for training and fine-tuning);
`bnas_zoo.deploy(model)` or `load_1bit_from_hub(..., deploy=True)` runs it on packed bits with bnas_zoo's
XNOR-popcount CPU kernels (measure with `bnas-zoo bench`). The speed-up figures above are theoretical (the
paper's cost model), not measurements. Binary networks are less accurate than their float counterparts; check
the accuracy on your own data before deployment.

## Citation

```bibtex
{{ citation }}
```
"""


#: words for the recipe keys in the card's Training table
RECIPE_LABELS = {
    'epochs': 'epochs',
    'batch_size': 'batch size (all processes)',
    'opt': 'optimizer',
    'lr': 'learning rate',
    'weight_decay': 'weight decay',
    'momentum': 'momentum (SGD)',
    'sched': 'learning-rate schedule',
    'sched_cycle_epochs': 'schedule cycle (epochs)',
    'cycle_decay': 'decay per cycle',
    'min_lr': 'minimum learning rate',
    'warmup_epochs': 'warm-up epochs',
    'warmup_lr': 'warm-up learning rate',
    'label_smoothing': 'label smoothing',
    'color_jitter': 'colour jitter',
    'hflip': 'horizontal flip probability',
    'random_crop_padding': 'random-crop padding (pixels)',
    'drop_path': 'drop-path rate',
    'drop_rate': 'dropout before the classifier',
    'grad_clip': 'gradient clipping (norm)',
    'binary_weight_decay': 'weight decay on the latent binary weights',
}

REPORTED_NOTE = ('*reported*: a figure stated by the paper or the authors for these weights, not measured on the '
                 'published files.')
MEASURED_NOTE = '*measured*: computed on these exact weights by the command shown.'


def _fmt_int(n: float) -> str:
    return f'{int(round(n)):,}'


def _size(n_bytes: Optional[int]) -> str:
    return f'{n_bytes / 2**20:.2f} MiB' if n_bytes is not None else ''


def _cell(value: Any) -> str:
    """A value in a Markdown table cell."""
    if value is None:
        return 'none'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    return str(value).replace('|', '\\|')


def _pct(value: Optional[float]) -> str:
    return f'{value:.2f}' if value is not None else ''


def _code(text: Optional[str]) -> str:
    return '`' + text.replace('|', '\\|') + '`' if text else ''


def _source(result: Dict[str, Any]) -> str:
    if result['source'] == 'reported':
        return f"reported ({result['reference']})" if result.get('reference') else 'reported'
    if result.get('weights') == 'ema':
        return f"measured (EMA weights, epoch {result['epoch']})"
    if result.get('epoch') is not None:
        return f"measured (best epoch, {result['epoch']} of {result['epochs']})" if result.get('epochs') else \
            f"measured (epoch {result['epoch']})"
    return 'measured'


def _training_section(recipe: Optional[str], run: Optional[Dict[str, Any]], converted_from: Optional[str]) -> str:
    """The recipe as a table and the command that reproduces the run; the publisher's own words first."""
    parts = [recipe.strip()] if recipe and recipe.strip() else []
    if run:
        rows = [('trained with', '`bnas-train`')]
        if run.get('model'):
            rows.append(('model', f"`{run['model']}`"))
        if run.get('dataset'):
            images = f", {run['train_images']:,} images" if run.get('train_images') is not None else ''
            rows.append(('training data', f"{run.get('dataset_name') or run['dataset']} "
                                          f"({run.get('train_split', 'train')} split{images})"))
        if run.get('num_classes'):
            rows.append(('classes', run['num_classes']))
        if run.get('recipe_name'):
            rows.append(('recipe', f"`{run['recipe_name']}`"))
        for key, value in (run.get('recipe') or {}).items():
            if key != 'data':
                rows.append((RECIPE_LABELS.get(key, key), value))
        if run.get('head_epochs'):
            rows.append(('classifier-only epochs first', run['head_epochs']))
        ema = run.get('weights') == 'ema'
        if run.get('model_ema'):
            rows.append(('weight EMA decay' + ('' if ema else ' (kept, not published)'), run['model_ema']))
        if run.get('seed') is not None:
            rows.append(('seed', run['seed']))
        if run.get('epoch') is not None:
            rows.append(('published weights', f"the EMA of the weights at epoch {run['epoch']}" if ema else
                         f"epoch {run['epoch']} (the best evaluated)"))
        table = ['| setting | value |', '|---|---|'] + [f'| {k} | {_cell(v)} |' for k, v in rows]
        parts.append('\n'.join(table))
        if run.get('command'):
            parts.append(f"Reproduce the run with:\n\n```bash\n{run['command']}\n```")
    elif converted_from:
        parts.append(f'Not trained with bnas_zoo: converted with `bnas-zoo convert-official` from `{converted_from}`, '
                     f"a checkpoint in the BNAS authors' release format.")
    return '\n\n'.join(parts) or 'Not recorded for these weights.'


def build_model_card(
        repo_id: str,
        architecture: str,
        profile: ModelProfile,
        dataset: Optional[str] = None,
        eval_results: Optional[Sequence[Dict[str, Any]]] = None,
        recipe: Optional[str] = None,
        license: Optional[str] = 'apache-2.0',
        float_bytes: Optional[int] = None,
        bit_bytes: Optional[int] = None,
        num_classes: Optional[int] = None,
        dataset_name: Optional[str] = None,
        run: Optional[Dict[str, Any]] = None,
        converted_from: Optional[str] = None,
        cell_pictures: Optional[Dict[str, str]] = None,
) -> ModelCard:
    """The model card: metadata header, usage, cost, evaluation, training, intended use, citation.

    Only what is known goes in: ``dataset`` (the training data's identifier; ``None`` when unknown: no
    ``datasets`` metadata then), ``eval_results`` (checked dicts: dataset, split, top1, top5, images, command,
    source 'measured' or 'reported', reference), ``run`` (a bnas-train run's record) or ``converted_from``.
    ``cell_pictures``: the picture file of each cell ('normal', 'reduce') in the published folder, shown in the
    card with relative links.
    """
    eval_rows, results, sources = [], [], set()
    for r in eval_results or ():
        ds = r['dataset']
        sources.add(r['source'])
        eval_rows.append(dict(dataset=_cell(r.get('dataset_name') or ds), split=_cell(r.get('split') or ''),
                              images=f"{r['images']:,}" if r.get('images') is not None else '',
                              top1=_pct(r.get('top1')), top5=_pct(r.get('top5')), source=_source(r),
                              command=_code(r.get('command'))))
        for key, name in (('top1', 'top-1 accuracy'), ('top5', 'top-5 accuracy')):
            if r.get(key) is None:
                continue
            reported = r['source'] == 'reported'
            results.append(EvalResult(
                task_type='image-classification', task_name='Image Classification',
                dataset_type=ds, dataset_name=r.get('dataset_name') or ds, dataset_split=r.get('split'),
                metric_type='accuracy', metric_name=f'{name} (reported)' if reported else name,
                metric_value=r[key]))
    eval_notes = [note for source, note in (('measured', MEASURED_NOTE), ('reported', REPORTED_NOTE))
                  if source in sources]
    card_data = ModelCardData(
        library_name='timm',
        license=license,
        tags=['image-classification', 'timm', 'binary-neural-network', 'bnas', 'xnor-net', 'bnas_zoo'],
        datasets=[dataset] if dataset else None,
        metrics=['accuracy'],
        pipeline_tag='image-classification',
        model_name=repo_id.split('/')[-1],
        eval_results=results or None,
    )
    about = []
    shown = (f'{dataset_name} (`{dataset}`)' if dataset_name and dataset_name != dataset else dataset) if dataset else None
    if run:
        about.append('Trained with `bnas-train`' + (f' on **{shown}**' if shown else '') + '.')
    elif converted_from:
        about.append(f'Converted with `bnas-zoo convert-official` from `{converted_from}`, a checkpoint in the BNAS '
                     f"authors' release format" + (f'; trained on **{shown}**' if shown else '') + '.')
    if not license:
        about.append('No licence is stated for these weights' + (" (the BNAS authors' release states none)"
                                                                 if converted_from else '') + '.')
    elif shown:
        about.append(f'Trained on **{shown}**.')
    if num_classes:
        about.append(f'The classifier has {num_classes:,} outputs (classes).')
    cost_rows = []
    for label, t in (('true (this network)', profile.true), ("paper's convention", profile.paper)):
        cost_rows.append(dict(
            label=label, params=f'{_fmt_int(t.params_1bit)} / {_fmt_int(t.params_32bit)}',
            binary_macs=_fmt_int(t.binary_macs), float_macs=_fmt_int(t.float_macs),
            flops=f'{t.flops / 1e8:.3f}e8', memory=f'{t.memory_bytes / 2**20:.2f} MiB',
            saving=f'{t.memory_saving:.2f}x', speedup=f'{t.speedup:.2f}x'))
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        repo_id=repo_id,
        architecture=architecture,
        about=about,
        dataset=dataset,
        num_classes=num_classes or 'its',
        input_size='x'.join(map(str, profile.input_size)),
        parameters=f'{profile.parameters:,}',
        cost_rows=cost_rows,
        eval_rows=eval_rows,
        eval_notes=eval_notes,
        training=_training_section(recipe, run, converted_from),
        citation=CITATION,
        cell_pictures=[dict(file=f, alt='reduction cell' if kind == 'reduce' else 'normal cell')
                       for kind, f in (cell_pictures or {}).items()],
        float_size=_size(float_bytes),
        bit_size=_size(bit_bytes),
    )
