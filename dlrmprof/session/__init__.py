"""The run layer: one `dlrmprof run` (one process or N ranks) from options to report.

    prepare.py   RunOptions -> Prepared: options checked, config/trace/Criteo rows loaded
    single.py    execute(prepared): the model run in this process, its report written
    ranks.py     run_rank(opts, dopts): one rank of a hybrid-parallel run and its report
    launch.py    launch(opts, dopts): start the ranks (torchrun's machinery), one-line errors
    exchange.py  what gen-trace's ranks exchange: torch.distributed (torchrun) or socket
                 pairs between processes of this host (`run_local`, gen-trace --nproc)
    merge.py     rank 0: the ranks' reports merged and every report written
    rows.py      op rows (measured time + counted work) from a timer, for all of the above
    sections.py  the end-to-end, noise and config sections, built once for all of the above
    numerics.py  the `numerics` study: a trained model evaluated in each dtype

Below it, `dlrm/` holds the model, its data sources, the training step and the parallel
exchange; `profile/` the timers, host facts, ceilings and the report model.  `commands/`
calls this layer and prints; nothing here prints.
"""
