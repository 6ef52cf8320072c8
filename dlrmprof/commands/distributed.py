"""`dlrmprof run --nproc N`: the hybrid-parallel (torch.distributed) form of `run`.

Not a command of its own: `dlrmprof/commands/run.py` adds these options with
`@distributed_options` and hands over to `run_distributed` when `--nproc` is given or the
process was started by `torchrun` (its rank is in the environment)::

    dlrmprof run --nproc 2 --config tiny --data random --iters 50
    torchrun --standalone --nproc_per_node 2 -m dlrmprof run --config tiny --data random
    # two hosts (run on each; HOST0 runs the rendezvous):
    dlrmprof run --nproc 8 --nnodes 2 --rdzv-endpoint HOST0:29400 --rdzv-id job1 --device cuda
"""

from __future__ import annotations

import functools

import click

COMMANDS: list = []  # options and helpers for `run`, no command of its own

_OPTIONS = [
    click.option("--nproc", type=int, default=None,
                 help="Hybrid-parallel run: N processes on this host (tables sharded across "
                      "them, MLPs data-parallel, all-to-all of pooled embeddings), started "
                      "through torchrun's machinery. Under plain torchrun this is implied."),
    click.option("--nnodes", type=int, default=1, show_default=True,
                 help="With --nproc: number of hosts (run the same command on each)."),
    click.option("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                 help="With --nproc: c10d rendezvous address (default: standalone, "
                      "localhost with a free port); required for --nnodes > 1."),
    click.option("--rdzv-id", default=None, help="With --nproc: job id shared by all hosts."),
    click.option("--rdzv-timeout", type=float, default=60.0, show_default=True,
                 help="Seconds the hosts wait for each other to join."),
    click.option("--dist-backend", type=click.Choice(["auto", "gloo", "nccl"]), default="auto",
                 show_default=True, help="auto: gloo on CPU, NCCL on CUDA."),
    click.option("--dist-timeout", type=float, default=120.0, show_default=True,
                 help="Process-group timeout in seconds: no collective waits longer."),
    click.option("--shard-by", type=click.Choice(["both", "lookups", "bytes"]), default="both",
                 show_default=True,
                 help="Table placement balances table bytes, expected lookup cost (from the "
                      "trace's miss-ratio curve at this host's cache size), or both."),
    click.option("--comm-barriers/--no-comm-barriers", default=True, show_default=True,
                 help="Time a wait before each collective (separates waiting for the slowest "
                      "rank from the transfer; costs one small all-reduce each)."),
]


def distributed_options(f):
    """Add the `--nproc ...` options to a click command (collected into `dist_kw`)."""

    @functools.wraps(f)
    def wrapper(*args, nproc, nnodes, rdzv_endpoint, rdzv_id, rdzv_timeout, dist_backend,
                dist_timeout, shard_by, comm_barriers, **kwargs):
        dist_kw = dict(nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint,
                       rdzv_id=rdzv_id, rdzv_timeout_s=rdzv_timeout, backend=dist_backend,
                       timeout_s=dist_timeout, shard_by=shard_by, barriers=comm_barriers)
        return f(*args, dist_kw=dist_kw, **kwargs)

    for opt in reversed(_OPTIONS):
        wrapper = opt(wrapper)
    return wrapper


def wants_distributed(dist_kw: dict) -> bool:
    from dlrmprof.session.ranks import under_torchrun

    return dist_kw.get("nproc") is not None or under_torchrun()


def _ms(s) -> str:
    return "-" if s is None else f"{s * 1e3:.2f} ms"


def summary_lines(merged: dict) -> list[str]:
    """Human lines from a merged report dict (per rank, then the job)."""
    e2e = merged["end_to_end"]
    d = e2e["distributed"]
    lines = []
    for r in d["ranks"]:
        a = r["accounting"]
        col = r["collectives"]

        def c(name):
            x = col.get(name)
            if not x:
                return f"{name} -"
            return (f"{name} {_ms(x['mean_s'])} ({x['bytes_per_step'] / 1e3:.1f} kB, "
                    f"{x['algbw_gbs']:.3g} GB/s)")

        lines.append(f"  rank {r['rank']} ({', '.join(r['tables'])}): step {_ms(a['step_s'])} = "
                     f"compute {_ms(a['compute_s'])} + wait {_ms(a['wait_s'])} + transfer "
                     f"{_ms(a['transfer_s'])} (+ {_ms(a['unaccounted_s'])} untimed, "
                     f"{a['accounting_error']:.1%})")
        lines.append(f"    {c('alltoall.fwd')}; {c('alltoall.bwd')}; {c('allreduce')}")
        if r.get("own_cores_mean") is not None:
            lines.append(f"    CPU: this rank got {r['own_cores_mean']:.2f} cores, all other "
                         f"processes (other ranks included) used {r['other_cores_mean']:.2f}")
    lines.append(f"all-to-all per step {_ms(d['alltoall_per_step_s'])} "
                 f"({d['alltoall_fraction_of_step']:.1%} of the step); all communication "
                 f"{_ms(d['comm_per_step_s'])}; compute imbalance (max/mean) "
                 f"{d['load_imbalance_compute']:.2f}; accounting error (max over ranks) "
                 f"{d['accounting_error_max']:.1%}")
    lines.append(f"end to end: {e2e['samples_per_s']:,.0f} samples/s over {d['world_size']} "
                 f"ranks (global batch {e2e['batch_size']}); model only "
                 f"{e2e['model_samples_per_s']:,.0f} samples/s")
    tr = merged.get("training") or {}
    if tr.get("losses"):
        lines.append(f"training loss (global) {tr['first_loss']:.4f} -> {tr['last_loss']:.4f}")
    return lines


def run_distributed(opts, dist_kw: dict) -> None:
    """Launch (or, under torchrun, be) the ranks of a hybrid-parallel run and print."""
    from dlrmprof.dlrm.distributed import resolve_backend
    from dlrmprof.session import launch as L
    from dlrmprof.session import ranks as R

    dopts = R.DistOptions(**{k: v for k, v in dist_kw.items() if v is not None})
    if R.under_torchrun():
        env = R.rank_env()
        if dist_kw.get("nproc") is not None:
            raise click.UsageError("--nproc is for starting the ranks; under torchrun the "
                                   "ranks are already started (drop --nproc)")
        res = R.run_rank(opts, dopts)
        if env["rank"] == 0:
            _print_result(res["summary"], plan=True)
        return
    prep, plan = L.precheck(opts, dopts)
    click.echo(prep.config.describe())
    click.echo(plan.describe())
    world = dopts.nproc * dopts.nnodes
    click.echo(f"launching {dopts.nproc} rank(s) on this host ({world} in all, "
               f"{resolve_backend(dopts.backend, 'cpu' if opts.device == 'cpu' else 'cuda:0')}"
               f", global batch {prep.config.batch_size} = {world} x "
               f"{prep.config.batch_size // world})", err=True)
    res = L.launch(opts, dopts)
    if 0 in res:
        _print_result(res[0]["summary"])
    else:
        click.echo(f"ranks {', '.join(map(str, sorted(res)))} finished; rank 0's host wrote "
                   f"the reports")


def _print_result(summary: dict, plan: bool = False) -> None:
    merged = summary["merged"]
    if plan:
        from dlrmprof.dlrm.sharding import ShardingPlan

        click.echo(ShardingPlan.from_dict(merged["config"]["distributed"]["plan"]).describe())
    click.echo("\n".join(summary_lines(merged)))
    for p in summary["rank_reports"]:
        click.echo(f"wrote {p}")
    click.echo(f"wrote {summary['out']} (merged)")
