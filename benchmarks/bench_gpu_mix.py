"""GPU-mix ILP speed: 10 device types x 100 size buckets. Run: python benchmarks/bench_gpu_mix.py"""

from __future__ import annotations

import time

import numpy as np

from perfmodel import load_database
from perfmodel.solvers.gpu_mix import Bucket, plan_gpu_mix

DEVICES = ["h100-sxm", "h200-sxm", "a100-sxm-80gb", "a100-sxm-40gb", "b200", "l40s", "l4", "a10g", "mi300x",
           "h100-pcie"]
PRICES = {"l40s": 1.9, "l4": 0.8, "b200": 9.0, "mi300x": 3.5, "h100-pcie": 3.0}


def main() -> None:
    db = load_database()
    rng = np.random.default_rng(0)
    isl = np.geomspace(64, 8192, 10)
    osl = np.geomspace(16, 2048, 10)
    shares = rng.dirichlet(np.ones(100))
    buckets = [Bucket(float(i), float(o), float(s)) for (i, o), s in zip(((i, o) for i in isl for o in osl), shares)]
    t0 = time.perf_counter()
    res = plan_gpu_mix("llama-3.1-8b", DEVICES, buckets, rate=200, slo_tpot_ms=80, prices=PRICES, db=db)
    total = time.perf_counter() - t0
    print(f"10 device types x 100 buckets: {total:.2f} s in all (capacities + ILP; ILP {res.solve_time_s:.2f} s), "
          f"{res.cost_per_hour:,.1f} $/h vs best single {res.best_single_device} "
          f"{res.best_single_device_cost_per_hour:,.1f} $/h; instances {res.instances}")


if __name__ == "__main__":
    main()
