"""Reading an input and profiling its tables: the first half of `gen-trace`, in one process or
split by tables over ranks.

`capture(spec)` reads the input named by a `CaptureSpec` and returns one locality profile per
table.  With `spec.part = (rank, world)` it profiles only the tables rank, rank + world, ...;
`capture_rank(exchange, spec, synth)` is what each rank of `gen-trace --nproc N` (or of
`torchrun -m dlrmprof gen-trace ...`) runs: its share of the tables, every rank's profiles
exchanged (so each knows the whole plan), then, with a `SynthPlan`, its share of the synthesis
and fidelity measurement too, each table sent to rank 0 as it is made; rank 0 writes them
in table order as they come (`SynthesisStream`).  The ranks talk through `exchange`
(`session.exchange`: socket pairs between processes of this host for --nproc,
torch.distributed under torchrun); this module imports neither.
Profiles and syntheses do not depend on which process made them (a table's synthesis depends
on its profile, the sample count and the seed), so the trace (and its digest) is the same as
one process writes.  One uncompressed Criteo file up to SPLIT_MAX_BYTES is parsed in spans,
one per rank, and the ranks exchange their tables' raw values (`_capture_criteo_split`);
otherwise every rank reads the whole input in order (a Criteo or Terabyte file is parsed by
each rank for its own columns, twice when its copy of them would exceed onepass.KEEP_BYTES;
no temporary files).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dlrmprof.errors import UserError
from dlrmprof.tracegen.profile import DEFAULT_WINDOWS


@dataclass
class CaptureSpec:
    source: str
    inputs: tuple = ()
    tables: str | None = None
    columns: str | None = None
    sep: str | None = None
    header: str = "auto"
    max_rows: int | None = None
    table_rows: int | None = None
    strict: bool = False
    read_threads: int = 1
    windows: int = DEFAULT_WINDOWS
    hot: int | None = None
    jobs: int = 1
    sample_rate: float | None = None
    part: tuple | None = None           # (rank, world): profile every world-th table


@dataclass
class Captured:
    profiles: list
    info: object                         # readers.SourceInfo
    notes: list = field(default_factory=list)
    table_rows_synth: int | None = None  # rows of synthetic tables (non-Criteo --table-rows)
    synthesized: object = None           # by table: synthesize_table results (capture_rank)


@dataclass(frozen=True)
class SynthPlan:
    """What the ranks of a table-parallel capture need to synthesize their own tables: the
    options of `generate.synthesize_trace` that gen-trace passes."""
    length: int | float | None = None    # samples, or a multiple of the source's (--length)
    seed: int = 0
    keep_indices: bool = True
    compute_fidelity: bool = True


def _mine(names: list, part) -> list[int]:
    if part is None:
        return list(range(len(names)))
    rank, world = part
    return list(range(rank, len(names), world))


def capture(spec: CaptureSpec, progress_bar=None, exchange=None) -> Captured:
    """Read `spec`'s input and profile its tables (this process's share with `spec.part`;
    `exchange`: the ranks' `session.exchange` interface, for the span parse)."""
    from dlrmprof.tracegen import generate, readers

    info = readers.SourceInfo(kind=spec.source, files=[str(p) for p in spec.inputs],
                              table_rows_cap=spec.table_rows)
    notes: list[str] = []
    if spec.source not in ("csv", "parquet") and spec.columns is not None:
        raise UserError(f"--columns applies to --from csv or parquet, not --from {spec.source}")
    if spec.source != "csv" and (spec.sep is not None or spec.header != "auto"):
        raise UserError(f"--sep and --header apply to --from csv, not --from {spec.source}")
    if spec.source in ("kaggle", "terabyte"):
        return _capture_criteo(spec, info, notes, progress_bar, exchange)
    if len(spec.inputs) != 1:
        raise UserError(f"--from {spec.source}: expected exactly one --input file, "
                        f"got {len(spec.inputs)}")
    if spec.tables is not None:
        raise UserError(f"--tables applies to Criteo input, not --from {spec.source}")
    streams, rows_read = _read_streams(spec, info, notes)
    info.rows_read = rows_read
    mine = [streams[i] for i in _mine(streams, spec.part)]
    profiles = generate.profiles_from_streams(mine, windows=spec.windows, hot=spec.hot,
                                              jobs=spec.jobs, sample_rate=spec.sample_rate)
    return Captured(profiles, info, notes, spec.table_rows)


def _read_streams(spec: CaptureSpec, info, notes: list) -> tuple[list, int]:
    from dlrmprof.tracegen import readers

    path = spec.inputs[0]
    if spec.source == "index":
        streams = readers.read_index(path, max_rows=spec.max_rows)
    elif spec.source == "tbe":
        streams = readers.read_tbe(path)
    else:
        from dlrmprof.tracegen import csvlog

        if spec.source == "csv":
            got = csvlog.read_csv(path, columns=spec.columns, sep=spec.sep, header=spec.header,
                                  max_rows=spec.max_rows, strict=spec.strict)
            info.malformed = got.malformed
            info.malformed_examples = got.malformed_examples
            notes.append(f"csv: {len(got.streams)} columns as tables, "
                         f"{'a header line' if got.header else 'no header line'}, "
                         f"separator {got.sep!r}; values remapped per column")
        else:
            got = csvlog.read_parquet(path, columns=spec.columns, max_rows=spec.max_rows)
            notes.append(f"parquet: {len(got.streams)} columns as tables; values remapped per "
                         "column")
        return got.streams, got.rows_read
    return streams, int(sum(len(s.ids) for s in streams))


def _capture_criteo(spec: CaptureSpec, info, notes: list, progress_bar,
                    exchange=None) -> Captured:
    from dlrmprof.tracegen import generate, readers

    paths = list(spec.inputs)
    if not paths:
        if spec.source == "terabyte":
            raise UserError("--from terabyte: expected --input day_N file(s)")
        paths = [str(readers.BUNDLED_SAMPLE)]
        info.bundled_sample = True
        info.files = ["<bundled>/criteo_kaggle_train_head2k.txt"]
        notes.append("no --input: using the bundled real Criteo Kaggle sample "
                     "(first 1,999 rows of train.txt; see dlrmprof/data/NOTICE)")
    names = readers.parse_tables(spec.tables) or list(readers.CRITEO_TABLES)
    mine = [names[i] for i in _mine(names, spec.part)]
    if _split_parse_applies(spec, paths, exchange):
        return _capture_criteo_split(spec, info, notes, paths[0], names, exchange)
    reader = readers.read_criteo(paths, max_rows=spec.max_rows, tables=mine or names[:1],
                                 table_rows=spec.table_rows, strict=spec.strict,
                                 threads=spec.read_threads)
    bar = progress_bar(reader.total_bytes) if progress_bar else None
    if bar is not None:
        reader.progress = bar.update
    try:
        profiles = generate.profiles_from_criteo(reader, windows=spec.windows, hot=spec.hot,
                                                  jobs=spec.jobs, sample_rate=spec.sample_rate)
    finally:
        if bar is not None:
            bar.close()
    if not mine:
        profiles = []                   # more ranks than tables: this one only reads
    info.rows_read = reader.rows_read
    info.malformed = reader.malformed
    info.malformed_examples = [str(m) for m in reader.malformed_examples]
    return _criteo_captured(spec, info, notes, paths[0], profiles)


def _criteo_captured(spec: CaptureSpec, info, notes: list, path, profiles: list) -> Captured:
    if info.rows_read == 0:
        raise UserError(f"{path}: expected at least one well-formed Criteo row, got none"
                        + (f" ({info.malformed} malformed lines)" if info.malformed else ""))
    if spec.table_rows is not None:
        notes.append(f"--table-rows {spec.table_rows}: raw values reduced modulo "
                     f"{spec.table_rows} while reading; merged values change locality")
    return Captured(profiles, info, notes, None)


SPLIT_MAX_BYTES = 1 << 30     # inputs parsed by spans up to this size (each rank holds its span's
                              # raw values, 8 bytes per table and row, and its tables' columns)
_SPLIT_CHUNK = 1 << 16        # rows per block handed to the profile pass


def _split_parse_applies(spec: CaptureSpec, paths: list, exchange) -> bool:
    """Ranks parse a span of the input each (instead of all of it) for one uncompressed file
    read whole and leniently, up to SPLIT_MAX_BYTES, when they have an exchange."""
    from dlrmprof.tracegen.criteo import _is_gzip

    return not (exchange is None or spec.part is None or spec.part[1] < 2 or len(paths) != 1
                or spec.max_rows is not None or spec.strict or _is_gzip(Path(paths[0]))
                or Path(paths[0]).stat().st_size > SPLIT_MAX_BYTES)


def _capture_criteo_split(spec: CaptureSpec, info, notes: list, path: str,
                          names: list, exchange) -> Captured:
    """This rank's tables, with each rank parsing one span of the input (`line_spans`) and
    sending every other rank the raw values of that rank's tables from its span; each rank
    then maps its tables' values to dense ids in file order (rank 0's span first), so the ids,
    and the profiles, are those of one reader of the whole file."""
    from dlrmprof.tracegen import criteo
    from dlrmprof.tracegen.onepass import profiles_from_rows

    rank, world = spec.part
    span = criteo.line_spans(path, world)[rank]
    reader = criteo.read_criteo(path, tables=names, table_rows=spec.table_rows,
                                span=span, raw=True)
    own = _split_by_owner(reader, span, len(names), world, exchange)
    stats = exchange.all_gather((reader.rows_read, reader.malformed, reader.malformed_examples))
    blocks = exchange.exchange_rows(own, [s[0] for s in stats])
    del own
    mine = [names[i] for i in _mine(names, spec.part)]
    mapper = criteo.read_criteo(path, tables=mine or names[:1], table_rows=spec.table_rows)

    def read():
        for block in blocks:
            for lo in range(0, block.shape[0], _SPLIT_CHUNK):
                yield mapper.dense_ids(block[lo:lo + _SPLIT_CHUNK])

    def rows():
        return [spec.table_rows or max(d, 1) for d in mapper.table_distinct]

    profiles = profiles_from_rows(read, mine, rows, spec.windows, spec.hot, spec.jobs,
                                  spec.sample_rate) if mine else []
    _span_info(info, stats)
    return _criteo_captured(spec, info, notes, path, profiles)


def _split_by_owner(reader, span: tuple, tables: int, world: int, exchange) -> list:
    """The span's raw values, one [rows, tables owned] block per rank (`exchange.row_blocks`:
    the peers' may be memory they share), copied straight from each parsed block (one copy).
    The blocks are allocated for the most rows the span can hold (a row takes at least 41
    bytes); pages never written are never resident."""
    cap = (span[1] - span[0]) // 40 + 1
    own = exchange.row_blocks([(cap, len(range(o, tables, world))) for o in range(world)])
    at = 0
    for chunk in reader:
        n = chunk.sparse.shape[0]
        for o in range(world):
            own[o][at:at + n] = chunk.sparse[:, o::world]
        at += n
        del chunk
    return [block[:at] for block in own]


def _span_info(info, stats: list) -> None:
    """The whole input's row and malformed-line figures from each span's, with the spans'
    line numbers made the file's (each consumed line is a row or a malformed line)."""
    from dlrmprof.tracegen.criteo import read_criteo

    info.rows_read = sum(s[0] for s in stats)
    info.malformed = sum(s[1] for s in stats)
    examples, before = [], 0
    for rows, bad, ex in stats:
        examples += [replace(m, line=m.line + before) for m in ex]
        before += rows + bad
    info.malformed_examples = [str(m) for m in examples[:read_criteo.MAX_EXAMPLES]]


def capture_rank(exchange, spec: CaptureSpec, synth: SynthPlan | None = None,
                 stream: bool = False) -> Captured | None:
    """One rank of a table-parallel capture: profile this rank's tables, exchange every rank's
    profiles and, with `synth`, synthesize this rank's share of the tables (`synthesis_owners`)
    and measure their fidelity; each rank sends rank 0 its tables as it makes them.  Returns
    the whole capture on rank 0, None on the others.  Its `synthesized`: every table's
    `generate.synthesize_table` result, by table; with `stream`, a `SynthesisStream` that
    rank 0 reads in table order while the ranks are still up (making its own share as it
    goes: what `generate.synthesize_packed(done=...)` takes), else a dict of them all.
    `exchange`: the ranks' `session.exchange` interface (its rank and world size)."""
    rank, world = exchange.rank, exchange.world
    part = capture(replace(spec, part=(rank, world)), exchange=exchange)
    got = exchange.all_gather(part.profiles)
    profiles: list = [None] * sum(len(p) for p in got)
    for r, profs in enumerate(got):
        for j, prof in enumerate(profs):
            profiles[r + j * world] = prof
    del got
    done = None
    if synth is not None and profiles:
        tasks = _synthesis_plan(profiles, part.table_rows_synth, synth)
        owners = synthesis_owners(tasks, world)
        if rank != 0:
            for t in (t for t, r in enumerate(owners) if r == rank):
                exchange.send(0, (t, _synthesized(tasks[t])))
            exchange.flush()
            return None
        done = SynthesisStream(exchange, tasks, owners)
        if not stream:
            done = {t: done.pop(t) for t in range(len(tasks))}
    if rank != 0:
        return None
    part.profiles = profiles
    part.synthesized = done
    return part


def _synthesis_plan(profiles: list, table_rows, synth: SynthPlan) -> list:
    """The tasks of the whole synthesis (`generate.plan_synthesis`), as every rank makes them."""
    from dlrmprof.tracegen import generate

    return generate.plan_synthesis(
        profiles, generate.samples_for(synth.length, profiles), table_rows, synth.seed,
        synth.compute_fidelity, synth.keep_indices, packed=True)[1]


def _synthesized(task) -> tuple:
    """`generate.synthesize_table(task)`, its ids narrowed to the width the trace file stores
    (`tracefile.index_dtype`: at most half the int64 bytes sent and held until written)."""
    from dlrmprof.tracegen import generate
    from dlrmprof.tracegen.tracefile import index_dtype

    ids, offs, fid, distinct = generate.synthesize_table(task)
    if ids is not None:
        ids = ids.astype(index_dtype(task[2]))
    return ids, offs, fid, distinct


class SynthesisStream:
    """Rank 0's view of the tables' syntheses, read in table order (`pop(t)`): its own share
    made here, the other ranks' received as they send them (each rank sends its tables in
    table order).  While the next table is a peer's that has not come, rank 0 makes its own
    next tables ahead instead of waiting; so it packs, hashes and writes the tables as they
    come while the others still synthesize (`synthesis_owners` gives it less to synthesize
    for that), and holds only the tables made ahead or received ahead of the writer."""

    def __init__(self, exchange, tasks: list, owners: list):
        self._ex, self._tasks, self._owners = exchange, tasks, owners
        self._own = [t for t, r in enumerate(owners) if r == 0][::-1]    # still to make
        self._ready: dict = {}
        self._left = len(tasks)

    def __contains__(self, t) -> bool:
        return isinstance(t, int) and 0 <= t < len(self._tasks)

    def __len__(self) -> int:
        return self._left

    def pop(self, t: int) -> tuple:
        """Table t's result (each table once, in table order)."""
        while t not in self._ready:
            peer = self._owners[t]
            if peer == 0 or (self._own and not self._ex.poll(peer)):
                u = self._own.pop()           # this rank's next table (t itself, or ahead)
                self._ready[u] = _synthesized(self._tasks[u])
            else:
                u, res = self._ex.recv(peer)
                self._ready[u] = res
        self._left -= 1
        return self._ready.pop(t)


# A rough cost model of a table's synthesis and of rank 0's writing of the tables, fitted to
# per-table process times (docs/performance.md, issue 17 eighth round): only the balance of
# the ranks depends on it, never the trace.
_SYNTH_NS = (90.0, 10.0)    # per access: base, plus this per doubling of the table's ids
_WRITE_NS = 16.0            # per synthetic id kept: rank 0's packing, hashing, writing


def synthesis_owners(tasks: list, world: int) -> list[int]:
    """The rank that synthesizes each table of `generate.plan_synthesis`'s tasks: the most
    costly first, each onto the rank with the least work so far, where rank 0 starts with
    the work only it does (packing, hashing and writing every kept id, as the tables come:
    `SynthesisStream`), so that the other ranks take more of the tables."""
    def accesses(task):
        prof, B = task[0], task[1]
        return prof.accesses * B / prof.num_bags if prof.num_bags else 0.0

    def cost(task):
        return accesses(task) * (_SYNTH_NS[0] + _SYNTH_NS[1] * np.log2(task[0].distinct + 2))

    load = [0.0] * world
    load[0] = sum(_WRITE_NS * accesses(task) for task in tasks if task[5])   # keep_indices
    owners = [0] * len(tasks)
    for t in sorted(range(len(tasks)), key=lambda t: (-cost(tasks[t]), t)):
        rank = min(range(world), key=lambda r: (load[r], r))
        owners[t] = rank
        load[rank] += cost(tasks[t])
    return owners
