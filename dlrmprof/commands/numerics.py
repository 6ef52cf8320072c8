"""`dlrmprof numerics`: accuracy, bytes and time of each embedding dtype x MLP dtype."""

from __future__ import annotations

import json

import click

from dlrmprof.commands.flags import renamed


@click.command("numerics")
@renamed("--json", "--json-out", "elsewhere --json prints JSON on stdout")
@click.option("--input", "inputs", multiple=True, type=click.Path(dir_okay=False),
              help="Criteo train.txt-format file(s) (default: the bundled sample).")
@click.option("--input-rows", type=int, default=None, help="Read at most N rows.")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Last fraction of the rows held out for evaluation.")
@click.option("--config", default="kaggle", show_default=True, help="Preset or YAML file.")
@click.option("--max-rows", type=int, default=None, help="Cap every table at N rows.")
@click.option("--batch-size", type=int, default=None, help="Training batch (config's default).")
@click.option("--epochs", type=int, default=3, show_default=True,
              help="fp32 training passes over the train rows.")
@click.option("--backend", default="numba", show_default=True, metavar="numba|torch")
@click.option("--emb-dtype", "emb_dtypes", multiple=True,
              default=("fp32", "fp16", "bf16", "int8", "int4"), show_default=True,
              help="Embedding dtypes to evaluate (repeat the option).")
@click.option("--mlp-dtype", "mlp_dtypes", multiple=True, default=("fp32", "bf16"),
              show_default=True, help="MLP dtypes to evaluate (repeat the option).")
@click.option("--bootstrap", type=int, default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@click.option("--repeats", type=int, default=3, show_default=True,
              help="Timed evaluation passes per pair (median).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="reports/numerics.md",
              show_default=True, help="Markdown table; the plot goes beside it (.png).")
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows as JSON to this file.")
def numerics(inputs, input_rows, test_fraction, config, max_rows, batch_size, epochs, backend,
             emb_dtypes, mlp_dtypes, bootstrap, repeats, seed, out, json_path):
    """Train a DLRM in fp32 on real Criteo rows, then evaluate it with its tables in each
    embedding dtype (fp32, fp16, bf16, row-wise int8 / int4) and its MLPs in fp32 and bf16.

    Per pair: held-out logloss, ROC AUC and accuracy with bootstrap 95% intervals, the AUC
    difference from fp32 (paired interval), max and mean |delta p|, table bytes, bytes a
    lookup, lookup time and samples/s.  Says which differences these held-out rows are too
    few to resolve.

    \b
      dlrmprof numerics
      dlrmprof numerics --input train.txt --input-rows 1000000 --max-rows 1000000 --json-out n.json
      dlrmprof numerics --emb-dtype fp32 --emb-dtype int8 --mlp-dtype fp32
    """
    from pathlib import Path

    from dlrmprof.session.numerics import NumericsOptions, check_options, markdown, plot, \
        run_numerics
    from dlrmprof.fsutil import atomic_write_text

    opts = NumericsOptions(input=tuple(inputs), input_rows=input_rows,
                           test_fraction=test_fraction, config=config, max_rows=max_rows,
                           batch_size=batch_size, epochs=epochs, backend=backend, seed=seed,
                           bootstrap=bootstrap, repeats=repeats, emb_dtypes=tuple(emb_dtypes),
                           mlp_dtypes=tuple(mlp_dtypes))
    check_options(opts)
    res = run_numerics(opts, say=lambda s: click.echo(s, err=True),
                       progress=lambda s: click.echo(f"  {s}", err=True))
    text = markdown(res)
    click.echo(text)
    atomic_write_text(out, text)
    png = Path(out).with_suffix(".png")
    plot(res, png)
    click.echo(f"wrote {out}\nwrote {png}")
    if json_path:
        atomic_write_text(json_path, json.dumps(res.to_json(), indent=1) + "\n")
        click.echo(f"wrote {json_path}")


COMMANDS = [numerics]
