"""Write perfmodel/validation/cases_online.yaml: the finite-rate rows of TensorRT-LLM 0.14's online serving
table (mean TTFT and mean ITL at a given request rate), for ``perfmodel validate --set online``.

Source: NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md @258c7540c03517def55d9a5aadfa9288af474e1b,
"Online Serving Measurements" ("All data in the table below was generated using version 0.14.0, with 500
requests and BF16 precision"): TensorRT-LLM served through the Triton TensorRT-LLM backend, Llama 3.1 8B on
one GPU and 70B at TP 4, on H100 80GB HBM3 and H200 ("131GB HBM3" in the doc), at 2-32 requests/s and at an
infinite rate. The infinite-rate rows are in the public set (I241-I261). The doc does not name the arrival
process; the cases take the schema's default, Poisson.

Kept: rows where the reported request throughput is within 1 req/s of the offered rate (the table rounds it to
an integer), so the server kept up and a steady state exists for a queueing model to predict. Rows where it
fell behind (its queue grew for the whole run: e.g. 70B at 16 req/s finishing 12) are left out; their TTFT
measures the length of the run, not the server. Each kept row gives two cases: mean TTFT and mean ITL (inter-
token latency, which excludes the first token, as the schema's TPOT).

Run from the repository root: ``python benchmarks/cases/trtllm_014_online.py``. The figures below are the doc's,
row by row; the script only lays them out as cases, so a transcription can be checked against the source.
"""

from __future__ import annotations

from pathlib import Path

import yaml

COMMIT = "258c7540c03517def55d9a5aadfa9288af474e1b"
SOURCE = (f"NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md @{COMMIT[:8]}, Online Serving Measurements "
          "table ('generated using version 0.14.0, with 500 requests and BF16 precision')")
COLUMNS = {"h100-sxm": "H100 80GB HBM3", "h200-sxm": "H200 131GB HBM3 (sic; the H200 SXM 141 GB)"}
SYSTEMS = {("h100-sxm", 4): "dgx-h100", ("h200-sxm", 4): "hgx-h200", ("h100-sxm", 1): "1 x h100-sxm",
           ("h200-sxm", 1): "1 x h200-sxm"}
# (model, device, TP, ISL, OSL) -> rows (QPS, Tput req/s, mean TTFT ms, mean ITL ms) at finite rates, as printed
TABLE = {
    ("llama-3.1-70b", "h100-sxm", 4, 467, 256): [(2, 2, 62, 21), (4, 4, 68, 24), (8, 7, 92, 32), (16, 12, 175, 66),
                                                 (32, 16, 1229, 86)],
    ("llama-3.1-70b", "h100-sxm", 4, 467, 16): [(2, 2, 53, 18), (4, 4, 58, 20), (8, 8, 71, 24), (16, 16, 109, 38),
                                                (32, 28, 1197, 482)],
    ("llama-3.1-70b", "h100-sxm", 4, 202, 214): [(2, 2, 48, 20), (4, 4, 51, 22), (8, 7, 57, 25), (16, 11, 74, 32),
                                                 (32, 14, 116, 42)],
    ("llama-3.1-8b", "h100-sxm", 1, 467, 256): [(2, 2, 23, 8), (4, 4, 24, 9), (8, 8, 26, 9), (16, 15, 30, 11),
                                                (32, 26, 50, 19)],
    ("llama-3.1-8b", "h100-sxm", 1, 467, 16): [(2, 2, 19, 7), (4, 4, 20, 7), (8, 8, 22, 7), (16, 16, 24, 8),
                                               (32, 31, 29, 10)],
    ("llama-3.1-8b", "h100-sxm", 1, 202, 214): [(2, 2, 19, 7), (4, 4, 20, 8), (8, 7, 21, 9), (16, 13, 23, 10),
                                                (32, 23, 27, 11)],
    ("llama-3.1-70b", "h200-sxm", 4, 467, 256): [(2, 2, 58, 18), (4, 4, 63, 20), (8, 7, 84, 27), (16, 13, 165, 60),
                                                 (32, 16, 1279, 83)],
    ("llama-3.1-70b", "h200-sxm", 4, 467, 16): [(2, 2, 50, 15), (4, 4, 55, 16), (8, 8, 67, 20), (16, 16, 103, 33),
                                                (32, 28, 1259, 485)],
    ("llama-3.1-70b", "h200-sxm", 4, 202, 214): [(2, 2, 43, 17), (4, 4, 46, 18), (8, 7, 51, 21), (16, 11, 67, 28),
                                                 (32, 15, 112, 39)],
    ("llama-3.1-8b", "h200-sxm", 1, 467, 256): [(2, 2, 21, 6), (4, 4, 23, 7), (8, 8, 24, 7), (16, 15, 27, 9),
                                                (32, 27, 44, 16)],
    ("llama-3.1-8b", "h200-sxm", 1, 467, 16): [(2, 2, 18, 5), (4, 4, 19, 6), (8, 8, 20, 6), (16, 16, 22, 7),
                                               (32, 31, 27, 9)],
    ("llama-3.1-8b", "h200-sxm", 1, 202, 214): [(2, 2, 17, 6), (4, 4, 18, 6), (8, 7, 19, 7), (16, 14, 20, 8),
                                                (32, 24, 24, 9)],
}
MODEL_NAMES = {"llama-3.1-8b": "LLaMA 3.1 8B", "llama-3.1-70b": "LLaMA 3.1 70B"}
CIRCULAR = (" Partly circular: TensorRT-LLM's host time per iteration (perfmodel.engines.TRT_EXECUTOR_HOST_MS) is "
            "the mean gap between this case and its three siblings (16-token answers at 2 req/s) and the model's "
            "step without it.")
FIRST_ID = 1


def kept_up(qps: int, tput: int) -> bool:
    """The server finished requests at the offered rate, within the table's integer rounding."""
    return tput >= qps - 1


def cases() -> list[dict]:
    out, n = [], FIRST_ID
    for (model, device, tp, isl, osl), rows in TABLE.items():
        for qps, tput, ttft, itl in rows:
            if not kept_up(qps, tput):
                continue
            original = (f"Original row: {MODEL_NAMES[model]}, GPU {COLUMNS[device]}, TP {tp}, input {isl}, output "
                        f"{osl}, QPS {qps}: Tput {tput} req/s, mean TTFT {ttft} ms, mean ITL {itl} ms. TensorRT-LLM "
                        f"0.14.0 served through the Triton TensorRT-LLM backend, 500 requests, BF16; arrival process "
                        f"not stated (Poisson assumed).")
            for metric, value, what in (("ttft_ms", ttft, "mean TTFT"),
                                        ("tpot_ms", itl, "mean ITL (excludes the first token), as tpot_ms")):
                out.append({
                    "id": f"O{n:03d}", "kind": "infer", "source": SOURCE, "tier": "A",
                    "system": SYSTEMS[(device, tp)], "gpus": tp, "model": model,
                    "infer": {"isl": isl, "osl": osl, "requests": 500, "tp": tp, "precision": "bf16",
                              "scenario": "server", "rate": float(qps),
                              "engine": "TensorRT-LLM 0.14.0 + Triton tensorrtllm_backend"},
                    "measured": {"metric": metric, "value": value},
                    "notes": f"{original} Measured value: {what}; the table rounds it to whole milliseconds."
                             + (CIRCULAR if (qps, osl, metric) == (2, 16, "tpot_ms") else ""),
                })
                n += 1
    return out


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    rows = cases()
    header = ("# TensorRT-LLM 0.14's online serving table (perf-overview.md @" + COMMIT[:8] + "), the finite-rate rows\n"
              "# the server kept up with, for `perfmodel validate --set online`. Generated by\n"
              "# benchmarks/cases/trtllm_014_online.py; edit the script, not this file.\n")
    text = yaml.safe_dump(rows, sort_keys=False, width=120, allow_unicode=True)
    (root / "perfmodel" / "validation" / "cases_online.yaml").write_text(header + text)
    print(f"{len(rows)} cases written")


if __name__ == "__main__":
    main()
