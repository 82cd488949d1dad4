"""``m2bench`` command line: argument parsing and printing only; the work is in ``m2bench``."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from m2bench.errors import ConfigError, M2BenchError

EPILOG = "Docs: README.md. Errors exit with status 2; a sweep with a FAILED model exits 1."


def _friendly(fn: Callable) -> Callable:
    """Turn m2bench errors into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except M2BenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(epilog=EPILOG)
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """m2bench: benchmark Monarch Mixer models against Transformer baselines."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in (
        "alembic",
        "mlflow",
        "httpx",
        "sentence_transformers",
        "datasets",
        "bm25s",
        "transformers",
    ):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:  # datasets logs a failed read at ERROR, twice, before m2bench's one-line error
        os.environ.setdefault("DATASETS_VERBOSITY", "critical")  # read when datasets is imported
        logging.getLogger("datasets").setLevel(logging.CRITICAL)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # bm25s imports jax; keep it off the GPU
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # m2bench draws its own
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@main.command(epilog=EPILOG)
@click.option(
    "--task", "task", required=True, help="Task name, or TASK:SUBTASK (e.g. locov1:qmsum)."
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model name; repeat for several (default: the task's default models).",
)
@click.option("--sample", is_flag=True, help="Use the bundled real sample, offline.")
@click.option("--data-dir", type=click.Path(), help="Read the task's data from this folder.")
@click.option(
    "--out",
    type=click.Path(),
    help="Write OUT/<task>/<model>/metrics.json (and rankings) here [default: runs].",
)
@click.option("--limit", type=int, help="Evaluate only the first N examples (queries).")
@click.option("--batch-size", type=int, help="Evaluation batch size.")
@click.option("--max-steps", type=int, help="Bound on training steps (tasks that train).")
@click.option("--epochs", type=float, help="Bound on training epochs (tasks that train).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where to run.")
@click.option("--seeds", help="Tasks that train: one job per seed (e.g. 1,2,3); mean and std.")
@click.option("--seed", type=int, help="Random seed.")
@click.option(
    "--init",
    type=click.Choice(["pretrained", "random"]),
    help="pretrained (default): load the model's weights; random: untrained model.",
)
@click.option("--checkpoint", help="Weights to load: a local folder or a hub id.")
@click.option(
    "--resume",
    is_flag=True,
    default=None,
    help="Tasks that train: continue from the last checkpoint in OUT/<task>/<model>/checkpoints.",
)
@click.option("--config", "config_file", type=click.Path(), help="YAML file of run settings.")
@click.option(
    "--pred-len",
    type=click.IntRange(min=1),
    help="Forecasting tasks: horizon H (= task.pred_len=H).",
)
@click.option(
    "--protocol",
    type=click.Choice(["tslib", "clean"]),
    help="Time-series tasks: tslib reproduces the published protocol, clean (default) fixes its "
    "known leaks (= task.protocol=...).",
)
@click.option(
    "--parallel",
    type=click.Choice(["ddp", "fsdp"]),
    help="Under torchrun: DistributedDataParallel (default) or FSDP for models that do not fit.",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@_friendly
def run(
    task: str,
    models: tuple[str, ...],
    config_file: str | None,
    overrides: tuple[str, ...],
    no_progress: bool,
    **flags: Any,
) -> None:
    """Evaluate (and train, for tasks that train) models on a task; log each run to MLflow.

    KEY=VALUE overrides any run setting (batch_size=8), a model setting (model.max_length=512) or
    a task option (task.revision=<commit>).
    """
    from m2bench.runner import run as run_task

    flags["sample"] = flags["sample"] or None
    flags["resume"] = flags["resume"] or None
    pred_len = flags.pop("pred_len")
    if pred_len is not None:
        overrides = (*overrides, f"task.pred_len={pred_len}")
    parallel = flags.pop("parallel")
    if parallel is not None:
        os.environ["M2BENCH_PARALLEL"] = parallel  # read by m2bench.distributed on every rank
    protocol = flags.pop("protocol")
    if protocol is not None:
        overrides = (*overrides, f"task.protocol={protocol}")
    results = run_task(
        task,
        models,
        config_file=config_file,
        overrides=overrides,
        progress=not no_progress,
        **flags,
    )
    click.echo(_results_table(task.partition(":")[0], results))
    if any(r.status == "FAILED" for r in results):
        sys.exit(1)


PERF_COLUMNS = (  # (metric, column, format) shown when some run of the sweep has the metric
    ("perf/docs_per_s", "docs/s", "{:.1f}"),
    ("perf/tokens_per_s", "tokens/s", "{:.0f}"),
    ("perf/query_latency_ms", "query ms", "{:.1f}"),
    ("perf/train_samples_per_s", "train samples/s", "{:.1f}"),
    ("perf/infer_samples_per_s", "infer samples/s", "{:.1f}"),
    ("params_m", "params M", "{:.2f}"),
)


def _results_table(task: str, results: list) -> str:
    import pandas as pd

    from m2bench.registry import get_task

    spec = get_task(task).spec
    metric = spec.metric
    rows = []
    subtasks = list(dict.fromkeys(sub for r in results for sub in r.summary))
    # without subtasks: the task's metrics side by side; with them: the main metric of each
    shown = [(f"{metric} (avg)", metric)] if subtasks else [(m, m) for m in spec.metrics]
    for r in results:
        row: dict[str, Any] = {"model": r.model, "status": r.status}
        row.update({sub: f"{r.summary[sub]:.4f}" if sub in r.summary else "-" for sub in subtasks})
        m = r.metrics
        row.update({label: f"{m[key]:.4f}" if key in m else "-" for label, key in shown})
        for key, label, fmt in PERF_COLUMNS:
            if any(key in x.metrics for x in results):
                row[label] = fmt.format(m[key]) if key in m else "-"
        row["run id"] = r.run_id or "-"
        rows.append(row)
    table = pd.DataFrame(rows).fillna("-")
    notes = [f"{r.status.lower()} {r.model}: {r.error}" for r in results if r.error]
    title = f"{metric} per subtask and averaged" if subtasks else ", ".join(spec.metrics)
    text = f"\n{task}: {title}\n" + table.to_string(index=False)
    return text + ("\n\n" + "\n".join(notes) if notes else "")


@main.command(epilog=EPILOG)
@click.option("--task", required=True, help="Task with fine-tuning (locov1).")
@click.option("--model", "model", required=True, help="A text_encoder model to fine-tune.")
@click.option(
    "--train-data",
    required=True,
    type=click.Path(),
    help="Folder of training files in the task's local format.",
)
@click.option(
    "--eval-data", type=click.Path(), help="Evaluate the saved checkpoint on this folder."
)
@click.option("--sample-eval", is_flag=True, help="Evaluate the saved checkpoint on the sample.")
@click.option(
    "--loss",
    type=click.Choice(["opl", "mnrl"]),
    default="opl",
    show_default=True,
    help="Orthogonal projection loss (paper) or multiple-negatives ranking loss.",
)
@click.option(
    "--negatives",
    type=int,
    default=32,
    show_default=True,
    help="Sampled negative passages per query and positive.",
)
@click.option(
    "--batch-size",
    type=int,
    default=1,
    show_default=True,
    help="Micro-batch size (pairs for opl, triples for mnrl).",
)
@click.option(
    "--save", type=click.Path(), help="Checkpoint folder [OUT/<task>/<model>/checkpoint]."
)
@click.option("--out", default="runs", show_default=True, type=click.Path())
@click.option(
    "--init",
    type=click.Choice(["pretrained", "random"]),
    default="pretrained",
    show_default=True,
    help="Start from the model's weights or from random init.",
)
@click.option("--checkpoint", help="Start from these weights (local folder or hub id).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-steps", type=int, help="Bound on optimizer steps (= train.max_steps).")
@click.option("--epochs", type=float, help="Epochs (= train.epochs, default 1).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@_friendly
def train(
    task: str,
    model: str,
    train_data: str,
    overrides: tuple[str, ...],
    max_steps: int | None,
    epochs: float | None,
    no_progress: bool,
    **kwargs: Any,
) -> None:
    """Fine-tune a retrieval encoder (LoCo recipe), save a checkpoint, and evaluate it.

    KEY=VALUE: train.<field> (lr, weight_decay, warmup_frac, max_grad_norm, grad_accum, epochs,
    max_steps; defaults: the LoCo paper's lr 5e-6, 32 micro-batches per step, 1 epoch) or
    model.<field>.
    """
    from m2bench.finetune import finetune

    _single_process("train")
    extra = [f"train.max_steps={max_steps}"] if max_steps is not None else []
    extra += [f"train.epochs={epochs}"] if epochs is not None else []
    res = finetune(
        task,
        model,
        train_data=train_data,
        overrides=(*overrides, *extra),
        progress=not no_progress,
        **kwargs,
    )
    losses = res.train.losses
    click.echo(
        f"trained {model}: {res.train.steps} steps, loss {losses[0]:.4f} -> "
        f"{losses[-1]:.4f}; checkpoint {res.checkpoint} (run {res.run_id})"
    )
    if res.evaluations:
        click.echo(_results_table(task.partition(":")[0], res.evaluations))
        if any(r.status == "FAILED" for r in res.evaluations):
            sys.exit(1)


@main.command(epilog=EPILOG)
@click.option("--model", "models", multiple=True, required=True, help="Model; repeat for several.")
@click.option(
    "--seq-len",
    "seq_lens",
    default="512,1024,2048,4096,8192,16384,32768",
    show_default=True,
    help="Comma-separated sequence lengths.",
)
@click.option(
    "--mode",
    "modes",
    default="fwd,fwdbwd",
    show_default=True,
    help="fwd (forward) and/or fwdbwd (forward + backward).",
)
@click.option(
    "--tokens-per-batch",
    default=65536,
    show_default=True,
    type=click.IntRange(min=1),
    help="Batch size = tokens / L, at least 1 (halved on out-of-memory).",
)
@click.option(
    "--precision", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--out", type=click.Path(), help="CSV file [results/bench_<gpu>.csv]; PNG beside it.")
@click.option(
    "--append",
    is_flag=True,
    help="Keep the CSV's rows this call does not redo (same model, mode, L, precision, device).",
)
@click.option("--no-progress", is_flag=True)
@click.argument("overrides", nargs=-1, metavar="[model.FIELD=VALUE]...")
@_friendly
def bench(
    models: tuple[str, ...],
    seq_lens: str,
    modes: str,
    tokens_per_batch: int,
    precision: str,
    device: str,
    warmup: int,
    repeats: int,
    out: str | None,
    append: bool,
    no_progress: bool,
    overrides: tuple[str, ...],
) -> None:
    """Throughput (tokens/ms), latency and peak memory of models over sequence lengths.

    model.FIELD=VALUE sets a config field on every model that has it (e.g. model.kernel=triton);
    the CSV's model column then names it (m2_bert_80m[kernel=triton]). A field that no model of
    the sweep has is an error. A model that raises while measured is recorded (status failed)
    and the command exits 1 after writing the CSV.
    """
    from pathlib import Path

    from m2bench.bench import default_out, run_bench

    _single_process("bench")
    from m2bench.config import RunConfig
    from m2bench.runtime import resolve_device

    try:
        lens = [int(x) for x in seq_lens.split(",")]
    except ValueError:
        raise M2BenchError(
            f"--seq-len {seq_lens!r} is not a comma-separated list of integers"
        ) from None
    dev, _ = resolve_device(RunConfig(task="bench", model=models[0], device=device))
    path = Path(out) if out else default_out(dev)
    rows = run_bench(
        list(models),
        lens,
        modes.split(","),
        tokens_per_batch=tokens_per_batch,
        device=dev,
        precision=precision,
        warmup=warmup,
        repeats=repeats,
        out=path,
        command="m2bench bench " + " ".join(sys.argv[2:]),
        progress=not no_progress,
        append=append,
        overrides=_model_overrides(overrides),
    )
    import pandas as pd

    df = pd.DataFrame([r.__dict__ for r in rows])
    table = df.pivot_table(index=["model", "mode"], columns="seq_len", values="tokens_per_ms")
    click.echo("tokens/ms (batch = tokens per batch / L):\n" + table.round(1).to_string())
    click.echo(f"wrote {path} and {path.with_suffix('.png')}")
    failed = [r for r in rows if r.status == "failed"]
    for r in failed:
        click.echo(f"FAILED: {r.model} {r.mode} L={r.seq_len}: {r.error}", err=True)
    if failed:
        sys.exit(1)


def _model_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    from m2bench.config import parse_overrides

    parsed = parse_overrides(items)
    bad = [k for k in parsed if not k.startswith("model.")]
    if bad:
        raise M2BenchError(f"bench takes only model.FIELD=VALUE overrides, not {bad[0]!r}")
    return {k[6:]: v for k, v in parsed.items()}


@main.command("list", epilog=EPILOG)
@click.argument("what", type=click.Choice(["tasks", "models"]), default="tasks")
@_friendly
def list_cmd(what: str) -> None:
    """List registered tasks or models."""
    import pandas as pd

    from m2bench.registry import get_model_spec, get_task, list_models, list_tasks

    pd.set_option("display.max_colwidth", 70)
    if what == "tasks":
        rows = []
        for name in list_tasks():
            s = get_task(name).spec
            rows.append(
                {
                    "task": name,
                    "version": s.version,
                    "kind": s.kind,
                    "metric": s.metric,
                    "default models": ", ".join(s.default_models),
                    "data": s.source.hf or s.source.sample,
                    "license": s.source.license,
                }
            )
    else:
        rows = []
        for name in list_models():
            s = get_model_spec(name)
            rows.append(
                {
                    "model": name,
                    "kind": s.kind,
                    "family": s.family,
                    "params M": "-" if s.params_m is None else f"{s.params_m:g}",
                    "max len": s.max_len or "-",
                    "description": s.description,
                }
            )
    click.echo(pd.DataFrame(rows).to_string(index=False))


@main.command(epilog=EPILOG)
@click.option("--task", help="Only this task (default: every task).")
@click.option(
    "--out",
    default="results/leaderboard.csv",
    show_default=True,
    type=click.Path(),
    help="CSV file to write.",
)
@click.option("--include-sample", is_flag=True, help="Include runs made with --sample.")
@click.option("--plot", is_flag=True, help="Also draw quality vs throughput per task (PNG).")
@_friendly
def leaderboard(task: str | None, out: str, include_sample: bool, plot: bool) -> None:
    """Regenerate the leaderboard CSV from the MLflow store (latest finished run per group)."""
    from m2bench import leaderboard as lb
    from m2bench.registry import get_task

    if task is not None:
        get_task(task)  # unknown names fail here, before anything is written
    df = lb.collect(task, include_sample=include_sample)
    path = lb.write(df, out)
    click.echo(f"wrote {path} ({len(df)} rows)")
    if plot and not df.empty:
        for png in lb.plot(df, path):
            click.echo(f"wrote {png}")
    if df.empty:
        hint = "" if include_sample else " (sample runs are left out; add --include-sample)"
        click.echo(f"no finished runs found in {_uri()}{hint}", err=True)


def _single_process(command: str) -> None:
    """Refuse torchrun for commands that are not data-parallel (they would run N times)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"m2bench {command} runs in one process; under torchrun only "
                          "`m2bench run` is data-parallel (start it without torchrun)")  # fmt: skip


def _uri() -> str:
    from m2bench.tracking import tracking_uri

    return tracking_uri()


@main.command(epilog=EPILOG)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@_friendly
def ui(port: int, host: str) -> None:
    """Open the MLflow UI on the store that `m2bench run` writes to."""
    import shutil

    from m2bench.tracking import default_artifact_root, tracking_uri

    uri = tracking_uri()
    if uri.startswith("http"):
        click.echo(f"runs are on the tracking server {uri}; open it in a browser")
        return
    exe = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    if not os.path.exists(exe):
        raise M2BenchError("the mlflow command is not installed; pip install 'mlflow>=3.17,<3.19'")
    args = [exe, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if "MLFLOW_TRACKING_URI" not in os.environ:
        args += ["--default-artifact-root", default_artifact_root().as_uri()]
    click.echo(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C stops it)")
    os.execv(exe, args)


@main.command(epilog=EPILOG)
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder of the database, artifacts and logs (created; reused on the next start).",
)
@click.option("--port", default=5000, show_default=True, type=int, help="MLflow server port.")
@click.option("--pg-port", type=int, help="PostgreSQL port [a free one].")
@click.option("--workers", type=int, help="MLflow server workers [min(4, CPUs)].")
@_friendly
def server(data_dir: str, port: int, pg_port: int | None, workers: int | None) -> None:
    """Team tracking: PostgreSQL plus an MLflow server on 127.0.0.1, until Ctrl-C.

    Many runs can log at once (the embedded SQLite store takes one writer at a time). Plain-shell
    equivalent: scripts/mlflow_server.sh.
    """
    import signal

    from m2bench.team import start_team

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)  # a service manager's stop = Ctrl-C
    click.echo(f"starting PostgreSQL and MLflow under {os.path.abspath(data_dir)} ...", err=True)
    try:
        with start_team(data_dir, port=port, pg_port=pg_port, workers=workers) as team:
            click.echo(
                f"MLflow tracking server at {team.url} (PostgreSQL on 127.0.0.1:"
                f"{team.postgres.port}; logs in {team.server.log_path.parent}); Ctrl-C stops "
                "both.\nPoint runs at it with:"
            )
            click.echo(f"export MLFLOW_TRACKING_URI={team.url}")
            try:
                code = team.server.proc.wait()
            except KeyboardInterrupt:
                click.echo("stopping MLflow and PostgreSQL ...", err=True)
                return
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise M2BenchError(f"the MLflow server exited with status {code}; see {team.server.log_path}")


if __name__ == "__main__":
    main()
