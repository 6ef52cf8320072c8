"""The ``numba`` kernel backend (CPU): the registry in `dlrmprof.kernels` resolves each op's
function here.  The kernels live by op, one module each:

    numba_embedding      embedding-bag forward, one table or all tables in one call
    numba_embedding_sgd  fused sparse SGD of embedding tables
    numba_prefetch       the row-prefetch plan both of them (and numba_quant) follow
    numba_interaction    dot interaction, forward and backward
    numba_dense          BCE loss + gradient, MLP backward steps, GEMM (linear)
    numba_inspect        the generated assembly (`numba_asm`), for the SIMD sweep
    numba_util           compile options, allocation, errors, thread count

Every kernel is ``cache=True``, so a child process of a SIMD sweep compiles once per ISA
setting.  The SIMD sweep runs them in child processes with different ``NUMBA_CPU_NAME`` /
``NUMBA_CPU_FEATURES``; `numba_asm(op)` returns the assembly the current process generates.
"""

from __future__ import annotations

from dlrmprof.kernels.numba_inspect import numba_asm
from dlrmprof.kernels.numba_dense import (bce_with_logits_grad, bias_sgd_, linear,
                                          linear_backward, relu_grad_)
from dlrmprof.kernels.numba_embedding import (SPECIALISED_MAX_D, embedding_bag,
                                              embedding_bag_fast, embedding_bag_tables,
                                              specialised)
from dlrmprof.kernels.numba_embedding_sgd import embedding_bag_sgd, embedding_bag_tables_sgd
from dlrmprof.kernels.numba_interaction import interaction, interaction_backward
from dlrmprof.kernels.numba_prefetch import L1_BYTES, L2_BYTES, L3_BYTES, prefetch_plan
from dlrmprof.kernels.numba_util import PARALLEL_MIN_WORK, BadIndexError, num_threads
from dlrmprof.platform import tsc_period_s

__all__ = ["BadIndexError", "L1_BYTES", "L2_BYTES", "L3_BYTES", "PARALLEL_MIN_WORK",
           "SPECIALISED_MAX_D", "bce_with_logits_grad", "bias_sgd_", "embedding_bag",
           "embedding_bag_fast", "embedding_bag_sgd", "embedding_bag_tables",
           "embedding_bag_tables_sgd", "interaction", "interaction_backward", "linear",
           "linear_backward", "num_threads", "numba_asm", "prefetch_plan", "relu_grad_",
           "specialised", "tsc_period_s"]
