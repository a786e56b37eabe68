"""Anderson acceleration with per-example stopping, for warm-started solves inside attacks.

torchdeq's solvers evaluate ``f`` on the whole batch at every step and stop when the *last*
example has converged, so warm starting the rows that are nearly converged saves nothing while
one row still needs many steps. Here every row stops as soon as its own residual is within
``tol`` and leaves the batch (in groups, see ``COMPACT_AT``): ``f`` is called on the rows still
in the batch only, as ``f(z_rows, rows)`` with ``rows`` their indices in the batch, so a row
costs about the evaluations *it* needs.

Per row the iteration is torchdeq's ``anderson_solver`` (history ``m``, mixing with tau = 1,
Tikhonov regulariser ``lam``), with one difference: the residual is checked from the first
evaluation on, so a row started at its fixed point stops after one evaluation. Like torchdeq,
each row returns f(z) at its lowest-residual iterate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

RowFunction = Callable[[Tensor, Tensor], Tensor]

# Finished rows leave the arrays once at most this fraction of them is still running; until then
# they ride along (their evaluations are counted). Copying the history at every step cost as
# much as the cell evaluations it saved.
COMPACT_AT = 0.75


@dataclass
class AndersonResult:
    """Per-row outcome: ``z`` has the shape of ``x0``, the rest leading size B.

    ``nstep``: evaluations until the lowest-residual iterate; ``evals``: evaluations spent;
    ``trace``: relative residual after each evaluation (B, max_iter), a finished row's lowest
    repeated after it stopped.
    """

    z: Tensor
    nstep: Tensor
    evals: Tensor
    abs_residual: Tensor
    rel_residual: Tensor
    trace: Tensor


def anderson(
    f: RowFunction,
    x0: Tensor,
    max_iter: int,
    tol: float,
    stop_mode: str = "rel",
    m: int = 6,
    lam: float = 1e-8,
) -> AndersonResult:
    """Fixed point of ``f`` from ``x0`` (B, ...), each row stopping at its own tolerance."""
    shape = x0.shape
    batch = shape[0]
    cur = x0.detach().reshape(batch, -1)
    dim = cur.shape[1]
    rel_mode = stop_mode == "rel"
    # Results per batch row, written when a row leaves the arrays (and at the end).
    out = cur.clone()
    best_abs = cur.new_full((batch,), float("inf"))
    best_rel = cur.new_full((batch,), float("inf"))
    device = cur.device
    nstep = torch.zeros(batch, dtype=torch.int64, device=device)
    evals = torch.zeros(batch, dtype=torch.int64, device=device)
    trace = cur.new_zeros(batch, max_iter)
    # The arrays of the rows still in the batch: history of f(x_i) and of the residuals
    # g_i = f(x_i) - x_i, the Gram matrix of the g_i (one row and column updated per step), and
    # each row's lowest-residual iterate so far.
    rows = torch.arange(batch, device=device)
    hist_f = cur.new_empty(batch, m, dim)  # slot i is written before it is read
    hist_g = cur.new_empty(batch, m, dim)
    gram = cur.new_zeros(batch, m, m)
    eye = lam * torch.eye(m, dtype=cur.dtype, device=device)
    a_out, a_abs, a_rel = out.clone(), best_abs.clone(), best_rel.clone()
    a_step = torch.zeros(batch, dtype=torch.int64, device=device)
    traces: list[Tensor] = []  # relative residual per step, (len(rows),) each, since the last compaction
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    k = 0

    def flush(leaving: Tensor) -> None:
        """Write the rows in ``leaving`` (array mask) to the batch results."""
        r = rows[leaving]
        out[r], best_abs[r], best_rel[r], nstep[r], evals[r] = (
            a_out[leaving],
            a_abs[leaving],
            a_rel[leaving],
            a_step[leaving],
            k + 1,
        )
        if traces:
            steps = torch.stack(traces, 1)[leaving]
            trace[r, k + 1 - steps.shape[1] : k + 1] = steps
        trace[r, k + 1 :] = a_rel[leaving, None]

    for k in range(max_iter):
        fx = f(cur.view(len(rows), *shape[1:]), rows).reshape(len(rows), dim)
        g = fx - cur
        slot, n = k % m, min(k + 1, m)
        hist_f[:, slot], hist_g[:, slot] = fx, g
        products = (hist_g[:, :n] @ g[:, :, None])[:, :, 0]
        gram[:, slot, :n] = products
        gram[:, :n, slot] = products
        abs_r = g.norm(dim=1)
        rel_r = abs_r / (fx.norm(dim=1) + 1e-9)
        residual = rel_r if rel_mode else abs_r
        better = residual < (a_rel if rel_mode else a_abs)
        a_out = torch.where(better[:, None], fx, a_out)
        a_abs, a_rel = torch.where(better, abs_r, a_abs), torch.where(better, rel_r, a_rel)
        a_step = torch.where(better, k + 1, a_step)
        traces.append(rel_r)
        done |= residual <= tol
        if k == max_iter - 1 or bool(done.all()):
            break
        active = ~done
        if int(active.sum()) <= COMPACT_AT * len(rows):
            # Earlier steps of the rows staying are written when they leave; keep their traces.
            flush(done)
            kept = [t[active] for t in traces]
            rows, hist_f, hist_g, gram, done = rows[active], hist_f[active], hist_g[active], gram[active], done[active]
            cur, a_out, a_abs, a_rel, a_step = cur[active], a_out[active], a_abs[active], a_rel[active], a_step[active]
            traces = kept
        h = gram.new_zeros(len(rows), n + 1, n + 1)
        h[:, 0, 1:] = h[:, 1:, 0] = 1.0
        h[:, 1:, 1:] = gram[:, :n, :n] + eye[:n, :n]
        rhs = gram.new_zeros(len(rows), n + 1, 1)
        rhs[:, 0] = 1.0
        alpha = torch.linalg.solve(h, rhs)[:, 1:, 0]
        cur = (alpha[:, None] @ hist_f[:, :n])[:, 0]
    flush(torch.ones(len(rows), dtype=torch.bool, device=device))
    return AndersonResult(out.view(shape), nstep, evals, best_abs, best_rel, trace)
