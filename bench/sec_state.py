"""State save while busy: the daemon's ``IndexState.save`` timed on a large store.

The state of an indexed ``--state-store`` store is loaded as the daemon loads it;
then 1, 100 and 2,000 records are marked re-indexed (``update_record``, as the
worker does after a batch) and the next ``save`` is timed, and a full rewrite
(``replace_records``, as after a first start) for comparison. The target is a
save proportional to what changed. A build whose state has no per-record update
is timed with full saves only.
"""

from __future__ import annotations

import random
import time
from typing import Any

import storegen
import stores
from measure import Ctx, median


def run(ctx: Ctx) -> dict[str, Any]:
    """The state section."""
    import sec_scale

    from kymwatch.daemon import IndexState

    o = ctx.opts
    n = o.state_store
    why = sec_scale.too_big(ctx, n)
    if why:
        ctx.log(f"state: {n} records {why}; measuring at {o.burst_store} instead")
        n = o.burst_store
    sec_scale.ensure_template(ctx, n)
    store = stores.indexed_copy(n, ctx.work / f"store-{n}")
    t0 = time.perf_counter()
    state = IndexState.load(store)
    res: dict[str, Any] = {
        "store_records": n,
        "size_cut": why,
        "load_s": time.perf_counter() - t0,
        "records_in_state": len(state.records),
        "saves": {},
    }
    ids = sorted(state.records)
    rng = random.Random(n)
    has_update = hasattr(state, "update_record")
    res["incremental_api"] = has_update
    for k in sorted({min(c, len(ids)) for c in (1, 100, 2000)}):
        if not has_update:
            break
        times = []
        for _ in range(max(3, o.reps)):
            for iid in rng.sample(ids, k):
                state.update_record(iid, state.records[iid], set(), lambda _name: set())
            t = time.perf_counter()
            state.save(store)
            times.append(time.perf_counter() - t)
        res["saves"][str(k)] = {"median_s": median(times), "runs_s": times, "changed": k}
        ctx.log(f"state: save after {k} changed records: {median(times) * 1000:.1f} ms")
    times = []
    for _ in range(max(3, o.reps)):
        state.replace_records(dict(state.records))
        t = time.perf_counter()
        state.save(store)
        times.append(time.perf_counter() - t)
    res["saves"]["full"] = {"median_s": median(times), "runs_s": times}
    ctx.log(f"state: full save of {len(ids)} records: {median(times) * 1000:.1f} ms")
    if hasattr(state, "close"):
        state.close()
    res["rows_per_record"] = storegen.ROWS_PER_RECORD
    return res
