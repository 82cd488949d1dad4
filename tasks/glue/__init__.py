"""GLUE: fine-tune and evaluate encoders on the nine tasks; the M2 paper's GLUE score.

Paper: Wang et al., "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
Understanding" (ICLR 2019); the M2 comparison (M2-BERT vs BERT) follows Fu et al., "Monarch Mixer"
(arXiv 2310.12109) and its official GLUE code (recipes in ``tasks/glue/recipes.py``).

Subtasks: cola, sst2, mrpc, qqp, stsb, mnli (dev matched and mismatched), qnli, rte, wnli. Each
is fine-tuned from fresh weights (RTE, MRPC and STS-B from the MNLI-fine-tuned weights when MNLI
runs first or ``task.mnli_checkpoint=FILE`` is given) and evaluated once on dev after the last
epoch. Metrics (scikit-learn / scipy): CoLA Matthews correlation; MRPC and QQP F1 and accuracy;
STS-B Pearson and Spearman; the others accuracy. Task score and GLUE average as the M2 code
computes them (``m2bench.metrics.glue_task_score``/``glue_average``: x100, WNLI excluded).

Data: hub ``nyu-mll/glue`` (online or the HF cache), ``--data-dir`` in the original GLUE layout
(``DIR/RTE/dev.tsv`` ...), or ``--sample``: the real WNLI and QNLI files bundled in
``tasks/data/glue_sample`` (the tasks whose licenses allow it; see its SOURCE.md).

Deviations: the task head (pooling, Linear+tanh, dropout, Linear) is freshly initialised, where
the official code keeps the pretrained pooler; M2's filter parameter groups are applied when the
model provides them; ``--limit`` bounds the dev rows, ``--max-steps``/``--epochs`` each job.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from m2bench import distributed, loop, timing
from m2bench.encoding import autocast
from m2bench.errors import ConfigError, DataError, ModelFailure
from m2bench.layers.heads import SequenceClassifier
from m2bench.metrics import glue_average, glue_metrics, glue_task_score
from m2bench.registry import register_task
from m2bench.runtime import seed_everything
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec
from tasks.glue import data as gdata
from tasks.glue.recipes import EXTRA_OPTIONS, Recipe, check_options, recipe, with_options

log = logging.getLogger(__name__)

#: training order: MNLI first, so that RTE, MRPC and STS-B can start from its weights
SUBTASKS = ("mnli", "qnli", "qqp", "sst2", "cola", "stsb", "mrpc", "rte", "wnli")
NUM_LABELS = gdata.NUM_LABELS
OPTIONS = (*Recipe.__dataclass_fields__, *EXTRA_OPTIONS)

SPEC = TaskSpec(
    name="glue",
    version=1,
    kind="seq_cls",
    metric="glue_score",
    higher_is_better=True,
    source=DataSource(
        hf="nyu-mll/glue",
        revision="main",
        license="per task (see tasks/data/glue_sample/SOURCE.md); MRPC is non-commercial",
        sample=gdata.SAMPLE,
        sample_sha256=gdata.SAMPLE_SHA256,
        citation="Wang et al. 2019; M2 recipes: arXiv 2310.12109",
    ),
    default_models=("m2_bert_80m", "bert_base", "minilm_l6"),
    model_kinds=("encoder", "text_encoder"),
    sample_size=64,
    trains=True,
    multi_seed=True,
    subtasks=SUBTASKS,
    description="GLUE dev, nine tasks; fine-tuning per task; M2 paper's GLUE average",
)


_eval_splits = gdata.eval_splits


def _batches(rows: list[dict], size: int, encoder: Any, max_length: int, device: torch.device):
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        second = [r["text_b"] for r in chunk] if chunk[0]["text_b"] is not None else None
        batch = encoder.tokenize_pairs([r["text_a"] for r in chunk], second, max_length=max_length)
        yield {k: v.to(device) for k, v in batch.items()}, chunk


def _labels(chunk: list[dict], regression: bool, device: torch.device) -> torch.Tensor:
    dtype = torch.float32 if regression else torch.long
    return torch.tensor([r["label"] for r in chunk], dtype=dtype, device=device)


def _loss(model: torch.nn.Module, item: tuple[dict, torch.Tensor]) -> torch.Tensor:
    batch, labels = item
    logits = model(batch)
    if labels.is_floating_point():
        return F.mse_loss(logits.squeeze(-1).float(), labels)
    return F.cross_entropy(logits.float(), labels)


@torch.no_grad()
def _predict(model, rows, ctx: EvalContext, max_length: int, precision: str, regression: bool):
    model.eval()
    preds, tokens = [], 0
    mine = distributed.shard(rows)  # under torchrun: this rank's slice; every row once overall
    with timing.Stopwatch(ctx.device) as sw:
        for batch, _chunk in _batches(mine, ctx.batch_size, model.encoder, max_length, ctx.device):
            tokens += batch["attention_mask"].numel()
            with autocast(ctx.device, precision):
                logits = model(batch).float()
            out = logits.squeeze(-1) if regression else logits.argmax(-1)
            preds += out.cpu().tolist()
    parts = distributed.gather((preds, tokens, sw.seconds))  # in rank order = row order
    preds = [p for part in parts for p in part[0]]
    tokens, seconds = sum(p[1] for p in parts), max(p[2] for p in parts)
    return preds, timing.Throughput.of(len(rows), tokens, seconds)


@register_task(SPEC)
class Glue:
    """GLUE task plugin: fine-tunes per subtask and seed, evaluates on dev."""

    def load(
        self,
        split: str = "test",
        *,
        limit: int | None = None,
        data_dir: str | Path | None = None,
        sample: bool = False,
        subtask: str | None = None,
        **options: Any,
    ) -> LoadedData:
        """Train and dev rows of each subtask (``tables["<subtask>/<split>"]``)."""
        check_options(options)
        _checkpoint_path(options.get("mnli_checkpoint"))
        if subtask is not None and subtask not in SUBTASKS:
            raise DataError(f"unknown GLUE subtask {subtask!r}; one of {', '.join(SUBTASKS)}")
        subs = [subtask] if subtask else _subtasks(data_dir, sample)
        tables, sources, revisions = {}, set(), []
        train_limit = options.get("train_limit")
        for sub in subs:
            for split_name in ("train", *_eval_splits(sub)):
                n = limit if split_name != "train" else train_limit
                rows, prov = gdata.load_glue(
                    sub, split_name, data_dir=data_dir, sample=sample, limit=n,
                    revision=str(options.get("revision", "main")),
                )  # fmt: skip
                tables[f"{sub}/{split_name}"] = rows
                sources.add(prov["data_source"])
                revisions.append(f"{sub}/{split_name}:{prov['data_revision']}")
        prov = {"data_source": _common_source(sources),
                "data_revision": _short_digest(revisions), "subtasks": ",".join(subs)}  # fmt: skip
        return LoadedData(tables, prov)

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Fine-tune fresh weights per subtask and seed; score dev; write predictions."""
        if ctx.build_model is None:
            raise ConfigError(
                "GLUE fine-tunes: run it through `m2bench run` (the runner builds models)"
            )
        subs = [s for s in SUBTASKS if f"{s}/train" in data.tables]
        metrics: dict[str, float] = {}
        summary: dict[str, float] = {}
        perf = {"train_samples": 0, "train_tokens": 0, "train_s": 0.0, "infer": []}
        mnli_state = _read_state(ctx.options.get("mnli_checkpoint"))
        pred_lines: list[str] = []
        tags: dict[str, str] = {}
        for sub in subs:
            per_seed: list[dict[str, float]] = []
            for seed in ctx.seeds:
                scores, state, lines, stats = self._job(model, data, ctx, sub, seed, mnli_state)
                per_seed.append(scores)
                pred_lines += lines
                perf["train_samples"] += stats["samples"]
                perf["train_tokens"] += stats["tokens"]
                perf["train_s"] += stats["seconds"]
                perf["infer"] += stats["infer"]
                tags[f"recipe/{sub}"] = stats["recipe"]
                metrics[f"{sub}/train_steps"] = float(stats["steps"])
                if sub == "mnli" and state is not None and mnli_state is None:
                    mnli_state = state
                    torch.save(state, Path(ctx.out_dir) / "mnli_encoder.pt")
            for name in per_seed[0]:
                values = [s[name] for s in per_seed]
                metrics[f"{sub}/{name}"] = statistics.fmean(values)
                if len(values) > 1:
                    metrics[f"{sub}/{name}_std"] = statistics.stdev(values)
            metrics[f"{sub}/n_eval"] = float(sum(len(data.tables[f"{sub}/{s}"])
                                                 for s in _eval_splits(sub)))  # fmt: skip
            summary[sub] = metrics[f"{sub}/task_score"]
        scored = {s: v for s, v in summary.items() if s != "wnli"}
        # the M2 paper's average over the 8 tasks; over those present when a run has fewer
        metrics["glue_score"] = (
            glue_average(scored, partial=True) if scored else summary.get("wnli", float("nan"))
        )
        metrics["n_tasks"] = float(len(scored) or len(summary))
        Path(ctx.out_dir, "predictions.jsonl").write_text("".join(pred_lines))
        infer = perf["infer"]
        out_perf = {
            "perf/train_samples_per_s": perf["train_samples"] / max(perf["train_s"], 1e-9),
            "perf/train_tokens_per_s": perf["train_tokens"] / max(perf["train_s"], 1e-9),
            "perf/infer_samples_per_s": sum(t.items_per_s for t in infer) / max(len(infer), 1),
            "perf/infer_tokens_per_s": sum(t.tokens_per_s for t in infer) / max(len(infer), 1),
            "perf/peak_mem_gb": timing.peak_memory_gb(ctx.device),
        }
        return EvalOutput(metrics, out_perf, summary, tags)

    def _job(self, spec_model, data, ctx: EvalContext, sub: str, seed: int, mnli_state):
        """One fine-tuning job: build, (MNLI-start), train, predict every dev row once."""
        seed_everything(seed)
        encoder = ctx.build_model()
        r = with_options(recipe(sub, spec_model.spec.family, encoder.hidden_size), ctx.options)
        start = r.start
        if r.start == "mnli" and mnli_state is not None:
            encoder.load_state_dict(mnli_state)
        elif r.start == "mnli":
            start = "pretrained (no MNLI-fine-tuned weights)"
            log.warning(
                "%s: no MNLI-fine-tuned weights (run mnli first or pass "
                "task.mnli_checkpoint=FILE); starting from the model's weights",
                sub,
            )
        max_length = min(r.max_length, encoder.max_length)
        regression = NUM_LABELS.get(sub, 2) == 1
        model = SequenceClassifier(encoder, NUM_LABELS.get(sub, 2), pooling=r.pooling)
        model.to(ctx.device)
        train_rows = data.tables[f"{sub}/train"]
        shuffle = bool(ctx.options.get("shuffle", False))
        precision = r.precision or ctx.precision
        tokens = [0]

        def batches(epoch: int):
            rows = train_rows
            if shuffle:
                order = torch.randperm(
                    len(rows), generator=torch.Generator().manual_seed(seed + epoch)
                )
                rows = [rows[i] for i in order]
            for batch, chunk in _batches(rows, r.batch_size, encoder, max_length, ctx.device):
                tokens[0] += batch["attention_mask"].numel()
                yield batch, _labels(chunk, regression, ctx.device)

        cfg = loop.TrainConfig(
            lr=r.lr, weight_decay=r.weight_decay, decoupled_wd=r.optimizer == "decoupled",
            betas=(0.9, 0.98), eps=1e-6, warmup_frac=0.06, max_grad_norm=None, grad_accum=1,
            epochs=ctx.epochs if ctx.epochs is not None else r.epochs, max_steps=ctx.max_steps,
        )  # fmt: skip

        # one curve per seed: the jobs of several seeds would otherwise share steps 1, 2, ...
        curve = f"train/{sub}/" if len(ctx.seeds) < 2 else f"train/{sub}/seed{seed}/"

        def on_step(step: int, value: float, lr: float) -> None:
            if ctx.log_metrics is not None:
                ctx.log_metrics({curve + "loss": value, curve + "lr": lr}, step)

        try:
            result = loop.train(model, batches, _loss, -(-len(train_rows) // r.batch_size), cfg,
                                device=ctx.device, precision=precision, on_step=on_step,
                                batch_size=lambda item: item[0]["input_ids"].shape[0],
                                progress=ctx.progress)  # fmt: skip
        except ModelFailure as exc:
            raise ModelFailure(f"GLUE {sub} seed {seed}: {_failure(exc, precision)}") from None
        scores, lines, infer = {}, [], []
        for split in _eval_splits(sub):
            rows = data.tables[f"{sub}/{split}"]
            preds, rate = _predict(model, rows, ctx, max_length, precision, regression)
            infer.append(rate)
            labels = [row["label"] for row in rows]
            part = glue_metrics(sub, labels, preds)
            prefix = "" if len(_eval_splits(sub)) == 1 else split.removeprefix("dev_") + "_"
            scores.update({prefix + k: v for k, v in part.items()})
            lines += [json.dumps({"subtask": sub, "split": split, "seed": seed, "idx": row["idx"],
                                  "label": row["label"], "prediction": p}) + "\n"
                      for row, p in zip(rows, preds, strict=True)]  # fmt: skip
        scores["task_score"] = glue_task_score(sub, scores)
        scores["train_final_loss"] = result.losses[-1]
        state = encoder.state_dict() if sub == "mnli" else None
        stats = {"samples": result.samples, "tokens": tokens[0], "seconds": result.seconds,
                 "infer": infer, "steps": result.steps,
                 "recipe": f"lr={r.lr:g} wd={r.weight_decay:g} {r.optimizer} epochs={cfg.epochs:g} "
                           f"bs={r.batch_size} max_length={max_length} pooling={r.pooling} "
                           f"start={start} precision={precision} shuffle={shuffle}"}  # fmt: skip
        return scores, state, lines, stats


def _common_source(sources: set[str]) -> str:
    """``dir:<folder>`` for local files (their common folder), else the sources joined."""
    if sources and all(s.startswith("dir:") for s in sources):
        import os.path

        return "dir:" + os.path.commonpath([s[4:] for s in sources])
    return ",".join(sorted(sources))


def _short_digest(parts: list[str]) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _subtasks(data_dir: str | Path | None, sample: bool) -> list[str]:
    """The subtasks a run covers: those of the sample or of the local folder, else all (hub).

    Raises:
        DataError: the local folder holds no complete subtask (the message gives the layout).
    """
    if sample:
        return list(gdata.SAMPLE_SUBTASKS)
    folder = Path(data_dir).expanduser() if data_dir is not None else gdata.default_dir()
    if folder is None:
        return list(SUBTASKS)
    found, skipped = gdata.scan(folder)
    absent = [sub for sub, why in skipped.items() if why.startswith("no ")]
    partial = [f"{sub} ({why})" for sub, why in skipped.items() if sub not in absent]
    if not found:
        held = ", ".join(sorted(entry.name for entry in folder.iterdir())[:12]) or "nothing"
        lacks = "".join(f"; {item}" for item in partial)
        raise DataError(f"no complete GLUE subtask in {folder} (it holds {held}{lacks}); "
                        + gdata.LAYOUT_HINT)  # fmt: skip
    if skipped:
        absent_note = [f"{', '.join(absent)} (no folder)"] if absent else []
        log.warning("GLUE data %s: found %s; skipped %s", folder, ", ".join(found),
                    "; ".join(partial + absent_note))  # fmt: skip
    return list(found)


def _failure(exc: ModelFailure, precision: str) -> str:
    """A training failure's reason; for a non-finite loss, advice that fits the job."""
    reason = str(exc)
    if reason.startswith("training loss is"):  # loop.train's generic advice names fp32 always
        reason = reason.split(";")[0] + "; lower task.lr"
        if precision != "fp32":
            reason += " or set task.precision=fp32"
    return reason


def _checkpoint_path(path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise DataError(f"task.mnli_checkpoint {p} does not exist; it is the mnli_encoder.pt that "
                        "a GLUE run with mnli writes into its --out folder")  # fmt: skip
    return p


def _read_state(path: str | None) -> dict | None:
    p = _checkpoint_path(path)
    return None if p is None else torch.load(p, map_location="cpu", weights_only=True)
