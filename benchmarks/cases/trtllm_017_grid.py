"""Write perfmodel/validation/cases_grid.yaml: every row of TensorRT-LLM 0.17's throughput table for the models
in perfmodel's catalog, except the rows the public set already carries.

Source: NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md @258c7540c03517def55d9a5aadfa9288af474e1b,
"Throughput Measurements" ("All data in the table below was generated using version 0.17 and presents token
throughput in tokens/second"): an offline, max-load run of trtllm-bench (GH200: gptManagerBenchmark) over
synthetic requests of fixed lengths, FP8 on H200/H100/GH200/L40S and FP16 on A100-SXM4-80GB. The Mistral 7B
rows are left out (no catalog entry, and the doc does not say which Mistral 7B revision ran).

Run from the repository root: ``python benchmarks/cases/trtllm_017_grid.py``. The figures below are the doc's,
row by row; the script only lays them out as cases, so a transcription can be checked against the source.
"""

from __future__ import annotations

from pathlib import Path

import yaml

COMMIT = "258c7540c03517def55d9a5aadfa9288af474e1b"
SOURCE = (f"NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md @{COMMIT[:8]} ('All data in the table "
          "below was generated using version 0.17'), Throughput Measurements table")
LENGTHS = [(128, 128), (128, 2048), (128, 4096), (500, 2000), (1000, 1000), (2048, 128), (2048, 2048),
           (5000, 500), (20000, 2000)]
REQUESTS = {(128, 128): 30000, (128, 2048): 3000, (128, 4096): 1500, (2048, 128): 3000, (2048, 2048): 1500,
            (5000, 500): 1500, (1000, 1000): 3000, (500, 2000): 3000, (20000, 2000): 1000}
COLUMNS = ("H200 141GB HBM3", "H100 80GB HBM3", "GH200 480GB", "L40S", "A100-SXM4-80GB")
DEVICES = ("h200-sxm", "h100-sxm", "gh200-96gb", "l40s", "a100-sxm-80gb")
N = None
# (model, TP) -> one row per ISL/OSL pair (order of LENGTHS), columns in the order of COLUMNS; None = blank
TABLE = {
    ("llama-3.1-8b", 1): [
        (29526.04, 28836.77, 29852.96, 9104.61, 6627.27), (25398.86, 21109.38, 21769.55, 5365.81, 5255.99),
        (17370.8, 13593.65, 14189.89, 3025.92, 3453.79), (21020.81, 16500.69, 17137.29, 4273.75, 4276.58),
        (17537.96, 15244.78, 16482.77, 4054.71, 3786.83), (3794.14, 3556.73, 3843.95, 1066.52, 799.61),
        (11968.5, 9488.42, 10265.9, 2225.27, 2424.16), (3987.79, 3559.36, 3932.58, 981.2, 825.13),
        (1804.1, 1401.31, 1560.2, 327.97, 330.04)],
    ("llama-3.1-70b", 1): [
        (4020.75, 3378.03, 3636.91, N, N), (4165.68, 911.62, 2082.74, N, N), (2651.75, 426.32, 1263.98, N, N),
        (3018.39, 775.57, 1973.86, N, N), (2823.45, 839.97, 1746.12, N, N), (465.99, 343.29, 424.96, N, N),
        (1913.8, N, 1086.93, N, N), (560.16, 245.34, 422.36, N, N), (279.52, N, N, N, N)],
    ("llama-3.1-70b", 2): [
        (6823.01, 6645.12, N, N, 1313.96), (8290.35, 6169.58, N, N, 531.26), (6526.67, 3897.06, N, N, N),
        (6848.02, 4972.57, N, N, 439.41), (5164.76, 4390.53, N, N, 472.94), (809, 772.66, N, N, 148.96),
        (4183.88, 2898.16, N, N, 261.1), (1025.38, 919.73, N, N, 121.47), (640.62, 443.01, N, N, N)],
    ("llama-3.1-70b", 4): [
        (11098.63, 11127.53, N, 1523.52, 2733.48), (14156, 11511.93, N, 1942.66, 2811.27),
        (10574.06, 7439.41, N, 1440.23, 1976.49), (12452.79, 9836.7, N, 1634.72, 2275.79),
        (8911.29, 7430.99, N, 1209.25, 1921.77), (1358.06, 1302.6, N, 177.72, 325.15),
        (7130.44, 5480.03, N, 969.68, 1393.64), (1811.55, 1602.78, N, 249.52, 392.62),
        (1199.68, 920.19, N, 162.25, 212.08)],
    ("llama-3.1-70b", 8): [
        (15355.84, 14730.69, N, 1464.03, 4717.62), (21195.88, 17061.82, N, 2303.31, 5241.5),
        (16941.52, 14171.43, N, 2018.22, 3724.67), (17278.4, 14679.33, N, 1971.96, 4445.37),
        (13181.24, 11451.16, N, 1333.62, 3320.41), (1983.03, 1923.41, N, 176.16, 542.38),
        (11142.47, 8801.95, N, 1200.16, 2553.71), (2717.83, 2457.42, N, 259.71, 696.34),
        (1920.45, 1512.6, N, 209.87, 413.38)],
    ("llama-3.1-405b", 8): [
        (3874.19, N, N, N, N), (5938.09, N, N, N, N), (5168.37, N, N, N, N), (5084.29, N, N, N, N),
        (3399.69, N, N, N, N), (463.42, N, N, N, N), (2940.62, N, N, N, N), (669.13, N, N, N, N),
        (535.31, N, N, N, N)],
    ("mixtral-8x7b", 1): [
        (17157.72, 15962.49, 16859.18, N, N), (15095.21, 8290.13, 11120.16, N, N),
        (9534.62, 4784.86, 6610.47, N, N), (12105.27, 6800.6, 9192.86, N, N), (10371.36, 6868.52, 8849.18, N, N),
        (2009.67, 1892.81, 1994.31, N, N), (6940.32, 3983.1, 5545.46, N, N), (2309.1, 1764.7, 2078.27, N, N),
        (1151.78, 673.7, 860.68, N, N)],
    ("mixtral-8x7b", 2): [
        (27825.34, 27451.13, N, N, 5541.47), (29584.05, 22830.08, N, N, 4169.78),
        (21564.68, 14237.01, N, N, 2608.05), (23410.63, 17036.04, N, N, 3446.37),
        (19151.19, 15770.89, N, N, 3154.52), (3383.16, 3333.68, N, N, 649), (14007.29, 10685.85, N, N, 2056.58),
        (4223.68, 3646.09, N, N, 724.44), (2299.21, 1757.45, N, N, 337.51)],
    ("mixtral-8x7b", 4): [
        (42551.59, 41068.23, N, 6921.87, 10324.28), (52291.78, 41164.73, N, 7996.93, 10911.86),
        (39513.73, 27912.48, N, 5736.09, 7666.51), (43818.99, 34489.34, N, 6914.68, 8456.21),
        (33580.9, 27784.74, N, 5251.49, 7122.84), (5467.62, 5234.98, N, 827.62, 1237.62),
        (24980.93, 19432.08, N, 3935.32, 5222.98), (7084.94, 6401.56, N, 1092.88, 1500.55),
        (4236.84, 3303.83, N, 682.48, 829.59)],
    ("mixtral-8x7b", 8): [
        (53212.55, 50849.55, N, 6740.84, 17043.54), (68608.45, 61607.7, N, 10393.3, 20277.88),
        (54827.78, 48280.37, N, 8472.35, 15282.89), (58706.39, 52583.65, N, 8660.71, 17184.24),
        (44705.48, 40631.71, N, 5947.72, 12851.44), (7554.38, 6988.18, N, 811.96, 2165.52),
        (36193.64, 30983.35, N, 5136.98, 9809.76), (10271.8, 9210.11, N, 1153.76, 2761.28),
        (6835.53, 5602.43, N, 918.95, 1592.53)],
    ("mixtral-8x22b", 8): [
        (22948.57, 21876.08, N, N, 6381.95), (32415.81, 25150.03, N, N, 6685.99),
        (25753.14, 18387.4, N, N, 4789.13), (27429.6, 21421.86, N, N, 5648.46), (19712.35, 16573.24, N, N, 4549.46),
        (2899.84, 2794.97, N, N, 761.56), (15798.59, 12244.93, N, N, 3521.98), (4031.79, 3645.27, N, N, 959.14),
        (2815.76, 2227.63, N, N, 575.02)],
}
MODEL_NAMES = {"llama-3.1-8b": "LLaMA v3.1 8B", "llama-3.1-70b": "LLaMA v3.1 70B", "llama-3.1-405b": "LLaMA v3.1 405B",
               "mixtral-8x7b": "Mixtral 8x7B", "mixtral-8x22b": "Mixtral 8x22B"}
FIRST_ID = 301


def _system(device: str, tp: int) -> str:
    return "gh200-node" if device == "gh200-96gb" else f"{tp} x {device}"


_NODES = {"hgx-h200": "8xh200-sxm", "dgx-h100": "8xh100-sxm", "dgx-a100": "8xa100-sxm-80gb"}


def _key(model: str, system: str, tp: int, isl: int, osl: int) -> tuple:
    name = system.replace(" ", "")
    return (model, _NODES.get(name, name), tp, isl, osl)


def public_keys(path: Path) -> set:
    """(model, system, tp, isl, osl) of the public set's rows from the same table."""
    keys = set()
    for c in yaml.safe_load(path.read_text()):
        if c.get("kind") == "infer" and COMMIT[:8] in c.get("source", "") and "Throughput" in c["source"]:
            i = c["infer"]
            keys.add(_key(c["model"], c["system"], i["tp"] or 1, i["isl"], i["osl"]))
    return keys


def cases(skip: set) -> list[dict]:
    out, n = [], FIRST_ID
    for (model, tp), rows in TABLE.items():
        for (isl, osl), row in zip(LENGTHS, rows):
            for column, device, value in zip(COLUMNS, DEVICES, row):
                system = _system(device, tp)
                if value is None or _key(model, system, tp, isl, osl) in skip:
                    continue
                fp16 = device == "a100-sxm-80gb"
                precision = "fp16" if fp16 else "fp8"
                bench = "gptManagerBenchmark" if device == "gh200-96gb" else "trtllm-bench"
                out.append({
                    "id": f"I{n:03d}", "kind": "infer", "source": SOURCE, "tier": "A", "system": system, "gpus": tp,
                    "model": model,
                    "infer": {"isl": isl, "osl": osl, "isl_max": None, "osl_max": None, "concurrency": None,
                              "requests": REQUESTS[(isl, osl)], "tp": tp, "pp": None, "ep": None, "dp": None,
                              "precision": precision, "kv_precision": precision, "scenario": "offline",
                              "engine": f"TensorRT-LLM 0.17 ({bench})"},
                    "measured": {"metric": "output_tokens_per_s", "value": value},
                    "notes": (f"Original: {MODEL_NAMES[model]}, TP {tp}, ISL/OSL {isl}/{osl}, column '{column}' "
                              f"({precision.upper()}) = {value} tokens/s, the whole TP group's generated tokens/s "
                              f"(the doc's sample output: Token Throughput = Request Throughput x OSL). Fixed lengths "
                              f"(prepare_dataset token-norm-dist, stdev 0), {REQUESTS[(isl, osl)]} requests (the doc's "
                              f"table), all issued at once; engine limits from trtllm-bench build --dataset; "
                              f"{'FP16 engine and KV cache' if fp16 else 'FP8 weights; FP8 engines get an FP8 KV cache (doc note)'}."),
                })
                n += 1
    return out


def main() -> None:
    root = Path(__file__).resolve().parents[2]
    validation = root / "perfmodel" / "validation"
    rows = cases(public_keys(validation / "cases_public.yaml"))
    header = ("# TensorRT-LLM 0.17's throughput table (perf-overview.md @" + COMMIT[:8] + "), every row not already in\n"
              "# cases_public.yaml, for `perfmodel validate --set grid`. Generated by benchmarks/cases/trtllm_017_grid.py;\n"
              "# edit the script, not this file.\n")
    text = yaml.safe_dump(rows, sort_keys=False, width=120, allow_unicode=True)
    (validation / "cases_grid.yaml").write_text(header + text)
    print(f"{len(rows)} cases written")


if __name__ == "__main__":
    main()
