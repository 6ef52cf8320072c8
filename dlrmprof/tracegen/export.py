"""Export a trace to other tools' formats.

* `oracle_general`: libCacheSim's oracleGeneral binary trace, 24-byte little-endian records
  ``{uint32 timestamp; uint64 obj_id; uint32 obj_size; int64 next_access_vtime}``
  (libCacheSim's oracleGeneralBin.h).  One request per index, in sample order (sample b:
  table 0's bag, then table 1's ...); timestamp = sample number; obj_id = table << 40 | row;
  obj_size = `obj_size` (1: cache sizes in entries; D*4 for rows of D float32);
  next_access_vtime = request number (0-based) of the next request to the same object,
  -1 if none.
* `tbe_requests`: FBGEMM TBE requests as a torch file {indices, offsets, lengths, T, B,
  table_names, rows} (int64 tensors, offsets T*B+1).
* `mrc_hist`: TorchRec `EmbeddingOffloadStats`-style statistics per table:
  ``mrc_hist_counts`` (n bins; bin i = accesses that hit in an LRU cache once its load factor
  (cache rows / table rows) reaches (i+1)/n), ``height`` (rows), ``cacheability`` (area under
  the miss-ratio curve over load factors 0..1), ``expected_lookups`` (mean distinct ids per
  batch of `batch_size` samples), and ``cold`` (first touches, which miss at any size).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dlrmprof.fsutil import atomic_path
from dlrmprof.tracegen.reuse import reuse_distances
from dlrmprof.tracegen.tracefile import Trace

ORACLE_DTYPE = np.dtype([("timestamp", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"),
                         ("next_access_vtime", "<i8")])
assert ORACLE_DTYPE.itemsize == 24
TABLE_SHIFT = 40


def request_stream(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """(obj_id, sample) of every index in sample order, tables interleaved per sample."""
    T, B = len(trace.tables), trace.num_samples
    off = trace.offsets
    lens = np.diff(off).reshape(T, B)            # [T, B]
    # order bags sample-major: (b, t)
    bag_order = (np.arange(T)[None, :] * B + np.arange(B)[:, None]).ravel()
    bag_lens = np.diff(off)[bag_order]
    starts = off[:-1][bag_order]
    total = int(bag_lens.sum())
    # positions of each element of each bag, concatenated in the new order
    rep = np.repeat(starts - np.concatenate([[0], np.cumsum(bag_lens)[:-1]]), bag_lens)
    src = np.arange(total, dtype=np.int64) + rep
    table_of_bag = np.repeat(np.arange(T, dtype=np.int64), B)[bag_order]
    sample_of_bag = np.tile(np.arange(B, dtype=np.int64), T)[bag_order]
    obj = (np.repeat(table_of_bag, bag_lens) << TABLE_SHIFT) | trace.indices[src]
    sample = np.repeat(sample_of_bag, bag_lens)
    del lens
    return obj, sample


def next_access(obj: np.ndarray) -> np.ndarray:
    """Index of the next request to the same object, -1 if none."""
    n = obj.shape[0]
    order = np.argsort(obj, kind="stable")
    nxt = np.full(n, -1, dtype=np.int64)
    same = obj[order[1:]] == obj[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def oracle_general(trace: Trace, out, obj_size: int = 1) -> int:
    """Write the oracleGeneral binary; returns the number of records."""
    obj, sample = request_stream(trace)
    if trace.num_samples > np.iinfo(np.uint32).max:
        raise ValueError("more samples than a uint32 timestamp holds")
    rec = np.empty(obj.shape[0], dtype=ORACLE_DTYPE)
    rec["timestamp"] = sample.astype(np.uint32)
    rec["obj_id"] = obj.astype(np.uint64)
    rec["obj_size"] = np.uint32(obj_size)
    rec["next_access_vtime"] = next_access(obj)
    with atomic_path(out) as tmp:
        rec.tofile(tmp)
    return int(rec.shape[0])


def tbe_requests(trace: Trace, out) -> None:
    import torch

    T, B = len(trace.tables), trace.num_samples
    data = {"indices": torch.from_numpy(np.ascontiguousarray(trace.indices)),
            "offsets": torch.from_numpy(np.ascontiguousarray(trace.offsets)),
            "lengths": torch.from_numpy(np.diff(trace.offsets)),
            "T": T, "B": B,
            "table_names": [m.name for m in trace.tables],
            "rows": [m.rows for m in trace.tables]}
    with atomic_path(out) as tmp:
        torch.save(data, tmp)


def mrc_hist(trace: Trace, bins: int = 100, batch_size: int = 128) -> dict:
    out = {}
    for t, meta in enumerate(trace.tables):
        ids, offs = trace.table_bags(t)
        d = reuse_distances(ids)
        warm = d[d >= 0]
        height = max(meta.rows, 1)
        b = np.ceil((warm + 1) * bins / height).astype(np.int64) - 1
        b = np.clip(b, 0, bins - 1)
        counts = np.bincount(b, minlength=bins).astype(np.int64)
        n = max(len(ids), 1)
        # miss ratio at load factor (i+1)/bins, then area under the curve
        miss = 1.0 - np.cumsum(counts) / n
        cacheability = float(np.concatenate([[1.0], miss]).mean())
        # expected lookups: distinct ids per batch of batch_size samples
        B = len(offs) - 1
        uniq = []
        for s in range(0, B, batch_size):
            seg = ids[offs[s]:offs[min(s + batch_size, B)]]
            uniq.append(np.unique(seg).size)
        out[meta.name] = {"mrc_hist_counts": counts, "height": int(meta.rows),
                          "cacheability": cacheability,
                          "expected_lookups": int(round(float(np.mean(uniq)))) if uniq else 0,
                          "cold": int((d < 0).sum()), "accesses": int(len(ids)),
                          "batch_size": int(batch_size)}
    return out


def mrc_hist_json(stats: dict) -> str:
    return json.dumps({n: {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                           for k, v in s.items()} for n, s in stats.items()}, indent=1)


def save_mrc_hist(stats: dict, out) -> None:
    import torch

    data = {name: {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                   for k, v in s.items()} for name, s in stats.items()}
    with atomic_path(out) as tmp:
        if Path(out).suffix == ".json":
            tmp.write_text(mrc_hist_json(stats))
        else:
            torch.save(data, tmp)
