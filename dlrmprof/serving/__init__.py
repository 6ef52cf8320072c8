"""Inference serving under load (`dlrmprof serve-bench`).

    loadgen   open-loop schedules: arrival times (Poisson, constant, replayed) and query sizes
    batcher   dynamic batching: queries split or merged up to max-batch, waiting <= max-wait
    worker    one instance: its own model copy in its own (optionally pinned) process
    launcher  the instances and the one dispatcher that drives them; per-op probes
    results   timestamps -> latency / wait / service percentiles, ideal-queue reference,
              co-location interference
    bench     the command as a library: options -> report with a ``serving`` section

The report section's typed model lives in `dlrmprof.profile.serving` (the report layer).
"""
