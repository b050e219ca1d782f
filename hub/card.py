"""Model cards of published bnas_zoo weights (huggingface_hub's ModelCard with a bnas_zoo template)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from bnas_zoo.profile import ModelProfile

__all__ = ['build_model_card', 'CITATION']

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

## Usage

```python
import timm
import bnas_zoo  # registers the architecture with timm
from bnas_zoo.hub import load_1bit_from_hub

model = timm.create_model("hf-hub:{{ repo_id }}", pretrained=True).eval()
# fine-tune with a fresh head:
model = timm.create_model("hf-hub:{{ repo_id }}", pretrained=True, num_classes=10)
# the exact deployable 1-bit form (packed sign bits + per-channel scales):
model_1bit = load_1bit_from_hub("{{ repo_id }}").eval()
```

## Files

| file | contents | size |
|---|---|---|
| `model.safetensors` | latent float weights (for training and fine-tuning) | {{ float_size }} |
| `model-1bit.safetensors` | binary convolutions as packed bits + one fp32 scale per output channel; everything else as stored; rebuilds the model alone, outputs identical in eval mode | {{ bit_size }} |
| `config.json` | timm config: architecture, model_args (the genotype itself included), pretrained_cfg | |

## Cost

Input {{ input_size }}. FLOPs = full-precision multiply-adds + binary multiply-adds / 64.

| accounting | parameters (1-bit / 32-bit) | binary MACs | FP MACs | FLOPs | memory | memory saving | speed-up |
|---|---|---|---|---|---|---|---|
{% for row in cost_rows -%}
| {{ row.label }} | {{ row.params }} | {{ row.binary_macs }} | {{ row.float_macs }} | {{ row.flops }} | {{ row.memory }} | {{ row.saving }} | {{ row.speedup }} |
{% endfor %}
*True* is this network as it runs (the stem, the 2x2 reduction shortcuts, the classifier and two convolutions
of the last cell are full precision, as in the authors' release); the *paper's convention* counts every
convolution but the stem as binary, as the paper's tables do. Parameters: {{ parameters }}.

## Evaluation

{% if eval_rows -%}
| dataset | split | top-1 | top-5 | command |
|---|---|---|---|---|
{% for row in eval_rows -%}
| {{ row.dataset }} | {{ row.split }} | {{ row.top1 }} | {{ row.top5 }} | `{{ row.command }}` |
{% endfor %}
{%- else -%}
No evaluation results were given when these weights were published.
{%- endif %}

## Training

{{ recipe }}

## Intended use and limits

Image classification and a starting point for fine-tuning binary networks on edge devices. The float
(latent) weights run through XNOR emulation in PyTorch: the speed-up and memory saving above are theoretical
and need a binary inference engine to be realised. Binary networks are less accurate than their float
counterparts; check the accuracy on your own data before deployment.

## Citation

```bibtex
{{ citation }}
```
"""


def _fmt_int(n: float) -> str:
    return f'{int(round(n)):,}'


def _size(n_bytes: Optional[int]) -> str:
    return f'{n_bytes / 2**20:.2f} MiB' if n_bytes is not None else ''


def build_model_card(
        repo_id: str,
        architecture: str,
        profile: ModelProfile,
        dataset: str,
        eval_results: Optional[Dict[str, Any]] = None,
        recipe: Optional[str] = None,
        license: str = 'apache-2.0',
        float_bytes: Optional[int] = None,
        bit_bytes: Optional[int] = None,
) -> ModelCard:
    """The model card: metadata header, cost summary, evaluation, recipe, intended use, citation."""
    eval_rows, results = [], []
    if eval_results:
        ds = eval_results.get('dataset', dataset)
        split = eval_results.get('split', 'validation')
        eval_rows.append(dict(dataset=ds, split=split, top1=eval_results.get('top1', ''),
                              top5=eval_results.get('top5', ''), command=eval_results.get('command', '')))
        for key, name in (('top1', 'top-1 accuracy'), ('top5', 'top-5 accuracy')):
            if eval_results.get(key) is not None:
                results.append(EvalResult(
                    task_type='image-classification', dataset_type=ds, dataset_name=ds, dataset_split=split,
                    metric_type='accuracy', metric_name=name, metric_value=float(eval_results[key])))
    card_data = ModelCardData(
        library_name='timm',
        license=license,
        tags=['image-classification', 'timm', 'binary-neural-network', 'bnas', 'xnor-net', 'bnas_zoo'],
        datasets=[dataset],
        metrics=['accuracy'],
        pipeline_tag='image-classification',
        model_name=repo_id.split('/')[-1],
        eval_results=results or None,
    )
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
        input_size='x'.join(map(str, profile.input_size)),
        parameters=f'{profile.parameters:,}',
        cost_rows=cost_rows,
        eval_rows=eval_rows,
        recipe=recipe or 'Not recorded for these weights.',
        citation=CITATION,
        float_size=_size(float_bytes),
        bit_size=_size(bit_bytes),
    )
