"""lm-eval tasks for any m2bench causal LM: ``m2bench run --task lm-eval:<task>``.

Runs EleutherAI's LM Evaluation Harness (Gao et al., https://github.com/EleutherAI/lm-evaluation-
harness; pinned range in ``m2bench.adapters.lm_eval``) on the model through m2bench's adapter
(GPT-2 BPE, the model's context, loglikelihood / rolling loglikelihood / greedy generation).

- The lm-eval task is the subtask: ``lm-eval:wikitext2_local``, ``lm-eval:hellaswag``, several
  joined by ``+`` (``lm-eval:lambada_openai+piqa``). Local task YAMLs come from
  ``tasks/data/lm_eval`` (bundled: ``wikitext2_local``, the real WikiText-2 raw test split as
  jsonl; the offline check) and ``task.include_path=DIR``; lm-eval's own tasks download their
  data from the hub.
- ``--sample`` runs ``wikitext2_local`` on its first ``sample_size`` documents; ``--limit`` bounds
  the documents of every task; ``task.num_fewshot=``; ``task.weights=FILE`` loads a state dict
  saved by an m2bench training run (e.g. ``runs/pile/<model>/model.pt``); the run is then tagged
  ``init=task.weights`` and ``weights_source=<file>`` (the model's own tags would say untrained).
- Checked in ``load``, before any model is built: task names (an unknown one names close ones),
  the weights file, the include folder. ``data_revision``: the bundled task's jsonl sha256 (checked
  against ``SAMPLE_SHA256``), else ``lm-eval <version>``; the version is also the tag ``lm_eval``.
- Metrics: every lm-eval metric as ``<task>/<metric>`` (and ``<metric>_stderr``);
  ``main_score`` is the first task's first metric, and the run states which (``score_metric``)
  and its direction (``higher_is_better``; the leaderboard ranks by it). lm-eval's full result
  JSON is the run artifact ``lm_eval_results.json``.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from m2bench import data as mdata
from m2bench import timing
from m2bench.errors import ConfigError, DataError
from m2bench.registry import register_task
from m2bench.specs import DataSource, EvalContext, EvalOutput, LoadedData, TaskSpec

LOCAL_TASKS = Path(__file__).resolve().parent / "data" / "lm_eval"
SAMPLE_TASK = "wikitext2_local"
OPTIONS = ("num_fewshot", "include_path", "weights")
#: data files of the bundled tasks (in ``LOCAL_TASKS``) and their sha256 (``SOURCE.md``)
SAMPLE_SHA256 = (
    ("wikitext2_local.jsonl", "18d7e94b01563599a122337fa68fa9fe2be7200ab41420548f0edf74adb401e0"),
)
BUNDLED_DATA = {SAMPLE_TASK: "wikitext2_local.jsonl"}

SPEC = TaskSpec(
    name="lm-eval",
    version=1,
    kind="lm",
    metric="main_score",
    higher_is_better=True,  # each run states its own direction (tag higher_is_better)
    source=DataSource(
        hf="(per lm-eval task)",
        revision="(per lm-eval task)",
        license="per lm-eval task; bundled wikitext2_local: CC BY-SA 3.0 (WikiText-2)",
        sample="lm_eval",
        sample_sha256=SAMPLE_SHA256,
        citation="Gao et al., EleutherAI LM Evaluation Harness",
    ),
    default_models=("m2_gpt_145m", "gpt_125m"),
    model_kinds=("causal_lm",),
    sample_size=8,
    description="any lm-eval task on an m2bench causal LM (lm-eval:<task>[+<task>...])",
)


@register_task(SPEC)
class LmEval:
    """lm-eval task plugin: the subtask names the lm-eval task(s)."""

    def load(self, split: str = "test", *, limit: int | None = None,
             data_dir: str | Path | None = None, sample: bool = False,
             subtask: str | None = None, **options: Any) -> LoadedData:  # fmt: skip
        """Check the request; lm-eval reads its own data when evaluating."""
        bad = sorted(set(options) - set(OPTIONS))
        if bad:
            raise ConfigError(
                f"unknown lm-eval option {bad[0]!r}; valid: task." + ", task.".join(OPTIONS)
            )
        if data_dir:
            raise ConfigError("lm-eval reads its tasks' own data: use task.include_path=DIR "
                              "for a folder of task YAMLs, not --data-dir")  # fmt: skip
        names = subtask.split("+") if subtask else ([SAMPLE_TASK] if sample else [])
        if not names:
            raise DataError("name the lm-eval task: --task lm-eval:<task> (offline: "
                            f"lm-eval:{SAMPLE_TASK}, or --sample)")  # fmt: skip
        weights = options.get("weights")
        if weights and not Path(weights).is_file():
            raise DataError(f"task.weights {weights} does not exist; it is a state dict "
                            "(e.g. runs/pile/<model>/model.pt)")  # fmt: skip
        include = Path(options.get("include_path") or LOCAL_TASKS)
        if not include.is_dir():
            raise ConfigError(f"task.include_path {include} is not a folder of lm-eval task YAMLs")
        _check_names(names, include)
        from m2bench.adapters.lm_eval import LM_EVAL_VERSION

        revisions = [_data_revision(name, include, LM_EVAL_VERSION) for name in names]
        prov = {"data_source": "lm-eval:" + "+".join(names), "lm_eval": LM_EVAL_VERSION,
                "data_revision": revisions[0] if len(names) == 1 else
                "+".join(f"{n}:{r}" for n, r in zip(names, revisions, strict=True))}  # fmt: skip
        if weights:  # the runner's tags say the model's own weights; these replace them
            prov.update(init="task.weights", weights_source=str(Path(weights).resolve()))
        return LoadedData({"tasks": names, "limit": [limit]}, prov)

    def evaluate(self, model: Any, data: LoadedData, ctx: EvalContext) -> EvalOutput:
        """Run lm-eval on the model; flatten its metrics; keep its result JSON."""
        from m2bench.adapters.lm_eval import evaluate as lm_evaluate

        names, limit = data.tables["tasks"], data.tables["limit"][0]
        include = ctx.options.get("include_path") or str(LOCAL_TASKS)
        local = {p.stem for p in Path(include).glob("*.yaml")}
        with timing.Stopwatch(ctx.device) as sw:
            results = lm_evaluate(
                model, names, out_dir=ctx.out_dir, include_path=include, limit=limit,
                num_fewshot=ctx.options.get("num_fewshot"), device=str(ctx.device),
                batch_size=ctx.batch_size, checkpoint=ctx.options.get("weights"),
                precision=ctx.precision, include_defaults=not set(names) <= local,
            )  # fmt: skip
        metrics, first = _flatten(results, names)
        n = sum(v for k, v in metrics.items() if k.endswith("/n_eval"))
        perf = {
            "perf/eval_seconds": sw.seconds,
            "perf/infer_samples_per_s": n / max(sw.seconds, 1e-9),
            "perf/peak_mem_gb": timing.peak_memory_gb(ctx.device),
        }
        higher = (
            results.get("higher_is_better", {}).get(names[0], {}).get(first.split("/")[1], True)
        )
        tags = {"score_metric": first, "higher_is_better": str(bool(higher)).lower(),
                "setting": "+".join(names) + f" fewshot={ctx.options.get('num_fewshot')}",
                "lm_eval_tasks": "+".join(names)}  # fmt: skip
        return EvalOutput(metrics, perf, {}, tags)


def _check_names(names: list[str], include: Path) -> None:
    """Each name must be a task (or group) of ``include`` or of lm-eval's own tasks.

    Raises:
        DataError: an unknown name, with close task names.
    """
    from lm_eval.tasks import TaskManager

    local = {p.stem for p in include.glob("*.yaml")}
    if set(names) <= local:  # the bundled and included tasks: no need to index lm-eval's ~15k
        return
    known = set(TaskManager(include_path=str(include), include_defaults=True).all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.75)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise DataError(f"unknown lm-eval task {name!r}; {hint}list them with "
                            "`python -m m2bench.adapters.lm_eval ls tasks`")  # fmt: skip


def _data_revision(name: str, include: Path, version: str) -> str:
    """``sha256:<digest>`` of a bundled task's data file (checked against ``SAMPLE_SHA256``);
    for other tasks the lm-eval version, whose task definition names the data."""
    if name not in BUNDLED_DATA or include.resolve() != LOCAL_TASKS.resolve():
        return f"lm-eval {version}"
    pinned = tuple(x for x in SAMPLE_SHA256 if x[0] == BUNDLED_DATA[name])
    mdata.verify_files(LOCAL_TASKS, pinned)  # a changed file is an error naming how to restore it
    return f"sha256:{pinned[0][1]}"


def _flatten(results: dict, names: list[str]) -> tuple[dict[str, float], str]:
    """``<task>/<metric>`` floats from lm-eval's results, and the name of the score metric."""
    metrics: dict[str, float] = {}
    first = ""
    for task in names:
        row = results.get("results", {}).get(task)
        if row is None:
            raise DataError(f"lm-eval returned no results for {task!r}; is it a task name "
                            "(`python -m m2bench.adapters.lm_eval ls tasks`)?")  # fmt: skip
        for key, value in row.items():
            if "," not in key or not isinstance(value, int | float) or isinstance(value, bool):
                continue  # "<metric>,<filter>" keys are metrics; sample_len, alias are not
            name = key.split(",")[0]
            if isinstance(value, float) and not math.isfinite(value):
                continue
            metrics[f"{task}/{name}"] = float(value)
            if not first and not name.endswith("_stderr"):
                first = f"{task}/{name}"
        effective = results.get("n-samples", {}).get(task, {}).get("effective")
        if effective is not None:
            metrics[f"{task}/n_eval"] = float(effective)
    if not first:
        raise DataError(f"lm-eval reported no metric for {names[0]!r}")
    metrics["main_score"] = metrics[first]
    return metrics, first
