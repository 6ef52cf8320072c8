"""`dlrmprof serve-bench`: tail latency under open-loop load, one or several model instances."""

from __future__ import annotations

import json
import re

import click

from dlrmprof.commands.run import run as _run_command
from dlrmprof.errors import UserError

# `run`'s options that mean the same here (model, data, device); the rest are run-only
SHARED_RUN_OPTIONS = ("device", "trace", "data", "backend", "config", "max_rows", "threads",
                      "seed", "inputs", "input_rows", "roofline", "fused_tables", "mlp_dtype",
                      "emb_dtype")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_time(text: str, option: str, default_unit: str = "ms") -> float:
    """'60', '60ms', '0.06s', '500us' -> seconds (a bare number is in `default_unit`)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|ms|s)?\s*", text)
    if not m:
        raise UserError(f"{option}: expected a time such as 60ms, 0.06s or 500us, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or default_unit]


def parse_rates(values: tuple[str, ...]) -> tuple[float, ...]:
    out = []
    for v in values:
        for part in v.split(","):
            try:
                r = float(part)
            except ValueError:
                raise UserError(f"--rate: expected queries/s (a positive number, or several "
                                f"separated by commas), got {part!r}") from None
            if not r > 0 or r == float("inf"):
                raise UserError(f"--rate must be positive, got {part!r}")
            out.append(r)
    return tuple(out)


@click.command("serve-bench")
@click.option("--rate", "rates", multiple=True,
              help="Offered load in queries/s; repeat or comma-separate for a sweep "
                   "(e.g. --rate 20,40,80).  With --arrivals file:PATH and no --rate, the "
                   "file's own times are replayed.")
@click.option("--duration", default="10s", show_default=True,
              help="Length of each load point (e.g. 30s).")
@click.option("--warmup", "warmup_t", default="2s", show_default=True,
              help="Queries arriving in the first part of each point are served, not counted.")
@click.option("--instances", type=int, default=1, show_default=True,
              help="Model processes, each with its own model copy, pinned to disjoint cores "
                   "when there are enough.")
@click.option("--max-batch", type=int, default=1024, show_default=True,
              help="Samples per batch, at most: larger queries are split, smaller ones merged.")
@click.option("--max-wait", default="2ms", show_default=True,
              help="How long the oldest pending sample may wait for a batch to fill (0: cut "
                   "at once).")
@click.option("--slo", default="60ms", show_default=True,
              help="p99 latency target (MLPerf's DLRM server scenario: 60 ms).")
@click.option("--arrivals", default="poisson", show_default=True,
              help="poisson, constant, or file:PATH (arrival times in seconds, one per line).")
@click.option("--query-size", "query_size", default="uniform:100:700", show_default=True,
              help="Samples per query: uniform:LO:HI, fixed:N, or hist:FILE ('size weight' "
                   "lines).")
@click.option("--probe-iters", type=int, default=30, show_default=True,
              help="Batches of --max-batch for the per-op probe, solo and co-located (0: no "
                   "probe).")
@click.option("--drain", default="10s", show_default=True,
              help="After each point, how long unanswered queries may still finish.")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="Pin instances to disjoint cores when the host has enough.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Report path (default reports/<host_id>/<time>-...-serve-*.json); a "
                   "Markdown summary and the latency PNG go beside it.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Latency vs load plot (default: beside the report, .latency.png).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the serving section as JSON instead of the table.")
def serve_bench(rates, duration, warmup_t, instances, max_batch, max_wait, slo, arrivals,
                query_size, probe_iters, drain, pin, out, png, as_json, **run_kw):
    """Serve a DLRM under open-loop load: latency percentiles vs offered load, the
    latency-bounded throughput under a p99 target, co-located instances' interference.

    Queries arrive open-loop (latency is measured from each query's scheduled arrival, so a
    slow server cannot slow the load down); they are split or merged into batches of at most
    --max-batch samples, waiting at most --max-wait; --instances model processes take the
    batches from one queue.  Before the sweep, a closed-loop probe times every op with one
    instance alone and with all co-located (the interference factor per verdict class).

    \b
      dlrmprof serve-bench --config tiny --data random --rate 50,100 --duration 5s
      dlrmprof serve-bench --config kaggle --max-rows 1000000 --data random \\
          --rate 10,20,40 --duration 20s --instances 2 --max-batch 256 --max-wait 0
      dlrmprof serve-bench --trace traces/locality.npz --arrivals file:arrivals.txt
      dlrmprof compare reports/a-serve.json reports/b-serve.json   (configs side by side)
    """
    from dlrmprof.session.prepare import RunOptions
    from dlrmprof.serving import bench
    from dlrmprof.serving.loadgen import parse_arrivals, parse_sizes

    fields = set(RunOptions.__dataclass_fields__)
    kw = {("input" if k == "inputs" else k): (tuple(v) if k == "inputs" else v)
          for k, v in run_kw.items()}
    run_opts = RunOptions(render=False, out=out, **{k: v for k, v in kw.items() if k in fields})
    serve = bench.ServeOptions(
        rates=parse_rates(rates), duration=parse_time(duration, "--duration", "s"),
        warmup=parse_time(warmup_t, "--warmup", "s"), instances=instances, max_batch=max_batch,
        max_wait=parse_time(max_wait, "--max-wait"), slo=parse_time(slo, "--slo"),
        arrivals=parse_arrivals(arrivals), sizes=parse_sizes(query_size),
        probe_iters=probe_iters, drain=parse_time(drain, "--drain", "s"), pin=pin)
    ps = bench.prepare_serve(run_opts, serve)
    say = (lambda s: click.echo(s, err=True))
    click.echo(ps.run.config.describe(), err=as_json)
    report, sec = bench.execute(ps, say=say)
    path = ps.run.out or bench.default_out(report)
    report.save(path)
    from dlrmprof.fsutil import atomic_write_text
    from dlrmprof.profile.render import markdown
    from dlrmprof.profile.serving import markdown as serving_md
    from dlrmprof.profile.serving import plot_latency_load

    md = path.with_suffix(".md")
    atomic_write_text(md, markdown(report))
    png_path = plot_latency_load([(sec.label, sec)], png or path.with_suffix(".latency.png"))
    if as_json:
        click.echo(json.dumps(sec.to_json(), indent=1))
        return
    click.echo(serving_md(sec), nl=False)
    click.echo(f"wrote {path}\nwrote {md}\nwrote {png_path}")


# run's option objects, reused as they are (one definition of each)
serve_bench.params.extend(p for p in _run_command.params if p.name in SHARED_RUN_OPTIONS)

COMMANDS = [serve_bench]
