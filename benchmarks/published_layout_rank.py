"""Where published layouts rank in perfmodel's own search for their setting (issue 6's check).

Run: python benchmarks/published_layout_rank.py
"""

from __future__ import annotations

import numpy as np

from perfmodel import load_database
from perfmodel.models import get_model
from perfmodel.solvers.plan_train import PLAN_KEYS, enumerate_plans
from perfmodel.specdb import SystemRef
from perfmodel.training import RECOMPUTE, evaluate_plans

# (case id, model, system, gpus, seq, global batch, precision, published plan)
PUBLISHED = [
    ("T072", "llama-3.1-70b", "dgx-h100", 64, 8192, 128, "fp8",
     dict(tp=4, pp=4, cp=2, vp=5, mb=1, rec="none", zero=1)),
    ("T068", "llama-3.1-405b", "dgx-h100", 576, 8192, 252, "fp8",
     dict(tp=8, pp=9, cp=2, vp=7, mb=1, rec="none", zero=1)),
    ("T075", "llama-3.1-8b", "dgx-h100", 8, 8192, 128, "bf16", dict(tp=1, pp=1, cp=2, vp=1, mb=1, rec="none", zero=1)),
    ("T002", {"family": "gpt", "layers": 30, "hidden": 3072, "heads": 32, "vocab": 51200}, "dgx-a100", 64, 2048, 512,
     "fp16", dict(tp=2, pp=1, cp=1, vp=1, mb=1, rec="full", zero=0)),
]


def main() -> None:
    db = load_database()
    for cid, model, system, gpus, seq, gb, prec, pub in PUBLISHED:
        m = get_model(model)
        base = db.resolve_system(system)
        ref = SystemRef(base.system, base.accelerator, gpus)
        plans = enumerate_plans(m, gpus, seq, gb, int(base.system.scale_up.domain_size.value),
                                vps=tuple(sorted({1, 2, 4, pub["vp"]})))
        ev = evaluate_plans(db, ref, m, plans, seq, gb, prec)
        dp = gpus // (pub["tp"] * pub["pp"] * pub["cp"])
        mask = np.ones(len(plans["tp"]), bool)
        want = dict(tp=pub["tp"], pp=pub["pp"], dp=dp, cp=pub["cp"], ep=1, vp=pub["vp"], mb=pub["mb"],
                    rec=RECOMPUTE.index(pub["rec"]), zero=pub["zero"])
        for k, v in want.items():
            mask &= plans[k] == v
        idx = np.nonzero(mask)[0]
        ok = np.nonzero(ev["fits"])[0]
        order = ok[np.argsort(ev["step_time_s"][ok])]
        if not len(idx):
            print(f"{cid}: published layout not in the search space")
            continue
        i = idx[0]
        rank = int(np.nonzero(order == i)[0][0]) + 1 if i in order else None
        best = ev["step_time_s"][order[0]]
        print(f"{cid}: published {want} -> {'rank ' + str(rank) if rank else 'does not fit in the model'} of "
              f"{len(order)} fitting layouts; {ev['step_time_s'][i]:.3f} s vs best {best:.3f} s "
              f"({ev['step_time_s'][i] / best - 1:+.1%}); best: "
              f"{ {k: int(plans[k][order[0]]) for k in PLAN_KEYS} }")


if __name__ == "__main__":
    main()
