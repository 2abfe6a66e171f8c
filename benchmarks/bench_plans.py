"""Speed of the planners (2-core machine). Run: python benchmarks/bench_plans.py"""

from __future__ import annotations

import random
import time

import numpy as np

from perfmodel import load_database
from perfmodel.models import get_model
from perfmodel.solvers.partition import partition_stages
from perfmodel.solvers.plan_serve import plan_serving
from perfmodel.solvers.plan_train import enumerate_plans, plan_training
from perfmodel.specdb import SystemRef
from perfmodel.training import evaluate_plans

GPT_1T = {"family": "gpt", "layers": 128, "hidden": 25600, "heads": 160, "vocab": 51200}


def timed(fn, repeats=3):
    best = float("inf")
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    db = load_database()
    m = get_model(GPT_1T)
    base = db.resolve_system("dgx-a100")
    ref = SystemRef(base.system, base.accelerator, 3072)
    plans = enumerate_plans(m, 3072, 2048, 3072, 8)
    # repeat the set to measure throughput once per-layer costs are shared
    big = {k: np.tile(v, 10) for k, v in plans.items()}
    t, _ = timed(lambda: evaluate_plans(db, ref, m, big, 2048, 3072, "bf16"))
    print(f"training plans evaluated per second (1T GPT, 3072 x A100, {len(big['tp']):,} plans): "
          f"{len(big['tp']) / t:,.0f}")
    t, res = timed(lambda: plan_training(GPT_1T, "dgx-a100", 3072, 2048, 3072, db=db))
    print(f"full training search, 1T GPT on 3072 x A100 ({res.evaluated:,} layouts + ILP + top-5): {t:.2f} s")
    t, res = timed(lambda: plan_serving("llama-3.1-70b", "dgx-h100", 1000, 500, 1000, 50, gpus=8,
                                        allow_disaggregated=True, db=db), repeats=1)
    print(f"serving search, Llama-3.1-70B on 8 x H100, colocated + disaggregated ({res.evaluated} layouts): {t:.2f} s")
    rng = random.Random(0)
    layers = [1.0 + rng.random() for _ in range(128)]
    t, part = timed(lambda: partition_stages(layers, 16, first_extra=0.5, last_extra=9.0), repeats=1)
    print(f"stage-partition ILP, 128 distinct layers on 16 stages: {t:.2f} s ({part.status})")


if __name__ == "__main__":
    main()
