"""Trace toolkit: read real embedding index streams, capture their locality, synthesize.

Public API (see docs/internals.md)::

    from dlrmprof.tracegen import Trace, TableMeta, LocalityProfile, reuse_distances, synthesize
"""

from dlrmprof.tracegen.generate import materialize, synthesize, synthesize_trace
from dlrmprof.tracegen.profile import LocalityProfile, build_profile
from dlrmprof.tracegen.reuse import hit_rates, mrc_sizes, reuse_distances
from dlrmprof.tracegen.tracefile import SCHEMA_VERSION, TableMeta, Trace

__all__ = ["Trace", "TableMeta", "LocalityProfile", "reuse_distances", "synthesize",
           "synthesize_trace", "materialize", "build_profile", "hit_rates", "mrc_sizes", "SCHEMA_VERSION"]
