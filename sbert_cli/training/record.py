"""What made a trained model: the JSON record (for programs) and the model card (for people)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

RECORD_FORMAT = "sbert-train/1"
# The evaluator's name, and the key its Spearman gets in the trainer's metrics and log.
EVAL_NAME = "sts"
METRIC = f"eval_{EVAL_NAME}_spearman_cosine"


def eval_scores(log_history: list[dict], metric: str) -> list[dict]:
    """Per-epoch eval scores from the trainer's log, one entry per epoch (a resumed run may have
    evaluated an epoch twice: the later entry, identical, wins)."""
    by_epoch: dict[int, dict] = {}
    for entry in log_history:
        if metric in entry:
            epoch = round(float(entry.get("epoch", 0)))
            by_epoch[epoch] = {"epoch": epoch, "step": int(entry.get("step", 0)), "spearman": float(entry[metric])}
    return [by_epoch[e] for e in sorted(by_epoch)]


def train_loss(log_history: list[dict]) -> float | None:
    """Mean training loss of the whole run, as the trainer reports it at the end (else the last logged)."""
    for entry in reversed(log_history):
        for key in ("train_loss", "loss"):
            if key in entry:
                return float(entry[key])
    return None


def build_record(facts: dict, scores: list[dict], kept: dict | None) -> dict:
    """The record: `facts` (command, base model, data, loss, hyperparameters, steps) plus scores."""
    import sbert_cli

    return {
        "format": RECORD_FORMAT,
        "complete": True,
        "sbert_version": getattr(sbert_cli, "__version__", "unknown"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **facts,
        "eval_scores": scores,
        "kept": kept,
    }


def _score_table(scores: list[dict], kept: dict | None) -> str:
    if not scores:
        return "No evaluation file was given (`--eval`): the model after the last epoch was kept.\n"
    lines = ["| epoch | step | Spearman x100 | |", "| ---: | ---: | ---: | --- |"]
    for s in scores:
        mark = "kept" if kept and s["step"] == kept.get("step") else ""
        lines.append(f"| {s['epoch']} | {s['step']:,} | {s['spearman'] * 100:.2f} | {mark} |")
    return "\n".join(lines) + "\n"


def _front_matter(base_name: str, loss_class: str) -> str:
    """The YAML header the Hugging Face hub reads (library, task, tags, base model)."""
    tags = ["sentence-transformers", "sentence-similarity", "sbert-cli", f"loss:{loss_class}"]
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity", "tags:"]
    lines += [f"- {tag}" for tag in tags]
    lines += [f"base_model: {json.dumps(base_name)}", "---"]
    return "\n".join(lines)


def model_card(record: dict, output_name: str) -> str:
    """README.md in the Hugging Face model-card layout: YAML front matter, then prose and tables."""
    base = record["base_model"]
    hp = record["hyperparameters"]
    data_lines = "\n".join(f"  - `{d['path']}`: {d['rows']:,} rows, {d['sha256']}" for d in record["data"])
    eval_line = (
        f"Evaluated each epoch on `{record['eval']['path']}` (Spearman of cosine vs gold).\n\n"
        if record["eval"]
        else ""
    )
    hp_lines = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in sorted(hp.items()))
    front = _front_matter(base["name"], record["loss_class"])
    return f"""{front}

# {output_name}

A sentence-transformers model fine-tuned with `sbert train` from **{base["name"]}**
(fingerprint `{base["fingerprint"]}`), pooling {", ".join(base["pooling"])}, {base["dim"]} dimensions.

## Training

- Data ({record["shape"]}, {record["rows"]:,} rows):
{data_lines}
- Loss: `{record["loss_class"]}` (`--loss {record["loss"]}`){" with mined hard negatives" if record["mining"] else ""}
- Steps: {record["steps"]:,} over {hp["epochs"]} epoch(s)

| hyperparameter | value |
| --- | --- |
{hp_lines}

## Evaluation

{eval_line}{_score_table(record["eval_scores"], record["kept"])}
## Use

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{output_name}")
vectors = model.encode(["A man is eating food."])
```

```bash
sbert encode corpus.txt --model {output_name} -o corpus.store
```

Everything that made this model is in `sbert-train.json` beside this card.
"""
