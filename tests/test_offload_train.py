"""Training with offload (perfmodel.offload_train): hand-checked volumes and times, monotonicity, errors."""

import json

import pytest

from perfmodel.errors import InputError
from perfmodel.memtiers import describe_machine
from perfmodel.models import get_model
from perfmodel.offload_train import (ADAM_BYTES_PER_PARAM, CPU_STREAM_FRACTION, SCHEMES, estimate_offload_training,
                                     pinned_bytes)
from perfmodel.specdb import load_database

GiB = 2**30
TINY = {"family": "llama", "layers": 16, "hidden": 2048, "heads": 16, "kv_heads": 8, "ffn_hidden": 5632, "vocab": 32000}
NV12 = ",".join(["nvme-gen4"] * 12)


@pytest.fixture(scope="module")
def db():
    return load_database()


def E(db, scheme, **kw):
    args = dict(model=TINY, system="1 x h100-sxm", seq_len=2048, global_batch=4, db=db)
    if scheme != "zero-offload":
        args["nvme"] = "nvme-gen4"
    args.update(kw)
    return estimate_offload_training(args.pop("model"), args.pop("system"), scheme=scheme, **args)


def test_zero_offload_hand_checked(db):
    r = E(db, "zero-offload")
    P = get_model(TINY).params_total
    mc = describe_machine(db, db.resolve_system("1 x h100-sxm"))
    link, host = mc.gpu_host_gbps * 1e9, mc.host.read_gbps * CPU_STREAM_FRACTION * 1e9
    m = r.micro_batches
    assert m == 4 and r.params_per_gpu == P
    # grads down every micro-batch (2 B/param), new 16-bit params up once (2 B/param)
    assert r.traffic["host_link"].write_bytes == pytest.approx(2 * P * m)
    assert r.traffic["host_link"].read_bytes == pytest.approx(2 * P)
    assert r.traffic["host_link"].time_s == pytest.approx(2 * P * m / link + 2 * P / link)
    # CPU Adam: ADAM_BYTES_PER_PARAM of host DRAM traffic per param
    assert r.cpu_optimizer_s == pytest.approx(ADAM_BYTES_PER_PARAM * P / host)
    assert r.traffic["host_dram"].read_bytes + r.traffic["host_dram"].write_bytes == pytest.approx(34 * P)
    # the exposed D2H is what the backward of each micro-batch does not hide
    assert 0 <= r.exposed_s["grad_d2h"] <= 2 * P * m / link
    assert r.exposed_s["optimizer_and_param_h2d"] == pytest.approx(max(r.cpu_optimizer_s, 2 * P / link))
    assert r.step_time_s == pytest.approx(r.gpu_time_s + sum(r.exposed_s.values()))
    assert r.tokens_per_s == pytest.approx(4 * 2048 / r.step_time_s)
    # host: 16 B/param of fp32 states; GPU: 16-bit params
    assert r.memory["host"].parts_bytes["optimizer_states_fp32"] == pytest.approx(16 * P)
    assert r.memory["gpu"].parts_bytes["params_16bit"] == pytest.approx(2 * P)
    assert r.fits
    # the delayed update (DPU) never slows the step
    assert E(db, "zero-offload", delayed_update=True).step_time_s <= r.step_time_s


def test_zero_infinity_hand_checked(db):
    r = E(db, "zero-infinity", global_batch=2)
    P = get_model(TINY).params_total
    mc = describe_machine(db, db.resolve_system("1 x h100-sxm"), nvme="nvme-gen4")
    R, W = mc.nvme.read_gbps * 1e9, mc.nvme.write_gbps * 1e9
    m = r.micro_batches
    assert m == 2
    nv = r.traffic["nvme"]
    # params read forward and backward every micro-batch, optimizer states read once; states + new params written
    assert nv.read_bytes == pytest.approx(m * 2 * 2 * P + 12 * P)
    assert nv.write_bytes == pytest.approx(14 * P)
    assert nv.time_s == pytest.approx(nv.read_bytes / R + nv.write_bytes / W)
    assert r.traffic["host_link"].write_bytes >= m * 2 * P
    assert r.exposed_s["optimizer"] == pytest.approx(max(12 * P / R + 14 * P / W, r.cpu_optimizer_s))
    # one Gen4 SSD cannot feed an H100: NVMe bounds the step
    assert r.bottleneck == "nvme"
    assert r.memory["nvme"].peak_bytes == pytest.approx(14 * P)
    assert r.memory["host"].parts_bytes["grad_partition_16bit"] == pinned_bytes(2 * P)
    assert r.step_time_s == pytest.approx(r.gpu_time_s + sum(r.exposed_s.values()))
    g = E(db, "zero-infinity", global_batch=2, optimizer_device="gpu")
    assert g.traffic["host_link"].read_bytes > r.traffic["host_link"].read_bytes


def test_fuyou_hand_checked(db):
    r = E(db, "fuyou", global_batch=1)
    P = get_model(TINY).params_total
    mc = describe_machine(db, db.resolve_system("1 x h100-sxm"), nvme="nvme-gen4")
    R, W = mc.nvme.read_gbps * 1e9, mc.nvme.write_gbps * 1e9
    nv = r.traffic["nvme"]
    assert r.memory["nvme"].parts_bytes["swapped_activations"] == 0  # fits in 80 GB
    assert nv.read_bytes == pytest.approx(4 * P + 12 * P)
    assert nv.write_bytes == pytest.approx(14 * P)
    assert r.busy_s["nvme"] == pytest.approx(16 * P / R + 14 * P / W)
    # overlapped: the step is at least the busiest resource, at most everything in series
    # (plus the pipeline's drain: the last layer's update after the backward)
    assert max(r.busy_s.values()) * (1 - 1e-9) <= r.step_time_s
    assert r.step_time_s <= (r.serial_s + r.exposed_s["optimizer_remainder"]) * (1 + 1e-9)
    assert r.overlap_s == pytest.approx(r.serial_s - r.step_time_s)
    assert r.bottleneck == "nvme"


def test_pinned_rounding():
    assert pinned_bytes(3 * GiB) == 4 * GiB and pinned_bytes(4 * GiB) == 4 * GiB and pinned_bytes(0) == 0


@pytest.fixture(scope="module")
def fast_db(tmp_path_factory):
    d = tmp_path_factory.mktemp("specs")
    (d / "fast.yaml").write_text("extends: nvme-gen4\nid: nvme-fast\nlink: pcie5-x4\n"
                                 "read_gbps: {value: 14.0, assumed: 'what-if'}\n"
                                 "write_gbps: {value: 10.0, assumed: 'what-if'}\n")
    return load_database((str(d),))


@pytest.mark.parametrize("scheme", ["zero-infinity", "fuyou"])
@pytest.mark.parametrize("model,system", [(TINY, "1 x h100-sxm"), ("gpt3-175b", "1 x rtx-4090")])
def test_faster_nvme_never_slows(fast_db, scheme, model, system):
    kw = dict(seq_len=1024, global_batch=1, host_memory="host-ddr5:128GiB", db=fast_db)
    slow = estimate_offload_training(model, system, scheme=scheme, nvme="nvme-gen4,nvme-gen4", **kw)
    fast = estimate_offload_training(model, system, scheme=scheme, nvme="nvme-fast,nvme-fast", **kw)
    more = estimate_offload_training(model, system, scheme=scheme, nvme=",".join(["nvme-fast"] * 8), **kw)
    assert fast.busy_s["nvme"] < slow.busy_s["nvme"]
    assert fast.step_time_s <= slow.step_time_s * (1 + 1e-12)
    assert more.step_time_s <= fast.step_time_s * (1 + 1e-12)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_more_capacity_never_infeasible(db, scheme):
    sizes = ["16GiB", "64GiB", "256GiB", "1TiB", "4TiB"]
    nvme_sizes = ["50GB", "500GB", "4TB"]
    prev = False
    for h in sizes:
        for nsz in nvme_sizes:
            kw = {} if scheme == "zero-offload" else {"nvme": f"nvme-gen4:{nsz}"}
            r = E(db, scheme, global_batch=1, host_memory=f"host-ddr5:{h}", **kw)
            if nsz == nvme_sizes[-1]:
                assert r.fits or not prev, (h, nsz)
                prev = r.fits
    assert prev


def test_zero_offload_spills_to_cxl(db):
    kw = dict(model="llama-2-7b", global_batch=1)
    small = E(db, "zero-offload", host_memory="host-ddr5:64GiB", **kw)
    assert not small.fits and small.memory["host"].short_by_bytes > 0
    assert "host short by" in small.shortfall_message()
    spill = E(db, "zero-offload", host_memory="host-ddr5:64GiB", cxl="cxl-aic-x16:256GiB", **kw)
    assert spill.fits and spill.memory["cxl"].peak_bytes > 0 and spill.busy_s["cxl"] > 0
    roomy = E(db, "zero-offload", host_memory="host-ddr5:1TiB", cxl="cxl-aic-x16:256GiB", **kw)
    assert "cxl" not in roomy.traffic and roomy.step_time_s <= spill.step_time_s
    forced = E(db, "zero-offload", host_memory="host-ddr5:1TiB", cxl="cxl-aic-x16:256GiB", optimizer_tier="cxl", **kw)
    assert forced.memory["cxl"].parts_bytes["optimizer_states_fp32"] == pytest.approx(16 * forced.params_per_gpu)
    assert forced.cpu_optimizer_s > roomy.cpu_optimizer_s


def test_multi_gpu_partitions_states(db):
    one = E(db, "zero-offload", system="1 x h100-sxm", global_batch=8)
    eight = E(db, "zero-offload", system="8 x h100-sxm", global_batch=8)
    assert eight.dp == 8 and eight.params_per_gpu == pytest.approx(one.params_per_gpu / 8)
    assert eight.traffic["host_link"].read_bytes == pytest.approx(one.traffic["host_link"].read_bytes / 8)


def test_bad_input(db):
    with pytest.raises(InputError, match="needs --nvme"):
        E(db, "zero-infinity", nvme=None)
    with pytest.raises(InputError, match="needs --nvme"):
        E(db, "fuyou", nvme=None)
    with pytest.raises(InputError, match="expected nvme"):
        E(db, "zero-infinity", nvme="cxl-aic-x16")
    with pytest.raises(InputError, match="one GPU"):
        E(db, "fuyou", system="2 x h100-sxm")
    with pytest.raises(InputError, match="offload-scheme"):
        E(db, "zero-offlaod")
    with pytest.raises(InputError, match="need --cxl"):
        E(db, "zero-offload", optimizer_tier="cxl")
    with pytest.raises(InputError, match=r"host short by [\d,.]+ GiB"):
        E(db, "zero-infinity", model="gpt3-175b", system="1 x rtx-4090", seq_len=1024, global_batch=1,
          host_memory="host-ddr5:128GiB", nvme=NV12, require_fit=True)


def test_fuyou_175b_on_one_4090_with_128gib(db):
    """Fuyou (Liao et al. 2024): GPT-3 175B on one RTX 4090 with little DRAM and 12 SSDs; ZeRO-Infinity cannot."""
    kw = dict(seq_len=1024, global_batch=16, micro_batch=16, host_memory="host-ddr5:128GiB", nvme=NV12, db=db)
    fy = estimate_offload_training("gpt3-175b", "1 x rtx-4090", scheme="fuyou", recompute="none", **kw)
    zi = estimate_offload_training("gpt3-175b", "1 x rtx-4090", scheme="zero-infinity", **kw)
    assert fy.fits and fy.bottleneck == "gpu_compute"
    assert fy.memory["nvme"].parts_bytes["swapped_activations"] > 0
    assert not zi.memory["host"].fits  # the 350 GB 16-bit gradient buffer alone exceeds 128 GiB
    assert zi.memory["host"].short_by_bytes > 350e9 - 128 * GiB
    assert zi.step_time_s > fy.step_time_s  # its out-of-core Adam after the backward leaves the GPU idle
    assert 50 < fy.model_tflops_per_gpu < 165


def test_cli_offload_flags_and_shortfall():
    from typer.testing import CliRunner

    from perfmodel.cli import app
    from perfmodel.cli.estimate import offload_scheme_for

    assert offload_scheme_for("optimizer", None, 8) == "zero-offload"
    assert offload_scheme_for("params,optimizer", None, 8) == "zero-infinity"
    assert offload_scheme_for("activations,optimizer", None, 1) == "fuyou"
    runner = CliRunner()
    base = ["estimate", "train", "--model", "gpt3-175b", "--system", "1 x rtx-4090", "--gpus", "1", "--seq-len", "1024",
            "--global-batch", "16", "--micro-batch", "16", "--recompute", "none", "--host-memory", "host-ddr5:128GiB",
            "--nvme", ",".join(["nvme-gen4"] * 12)]
    ok = runner.invoke(app, [*base, "--offload-scheme", "fuyou", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["fits"] is True
    bad = runner.invoke(app, [*base, "--offload", "params"])
    assert bad.exit_code == 2 and "host short by" in bad.stderr
    res = runner.invoke(app, [*base[:-4], "--offload", "weights"])
    assert res.exit_code == 2 and "--offload" in res.stderr


def test_plan_train_with_offload_ranks_fitting_layouts(db):
    from perfmodel.solvers.plan_train import plan_training_offload

    plans = plan_training_offload("llama-2-13b", "1 x rtx-4090", 1, 1024, 16, "fuyou",
                                  host_memory="host-ddr5:128GiB", nvme="nvme-gen4,nvme-gen4,nvme-gen4,nvme-gen4",
                                  top=3, db=db)
    assert plans and all(p.fits for p in plans)
    times = [p.step_time_s for p in plans]
    assert times == sorted(times)
    with pytest.raises(InputError, match="no zero-infinity layout fits|short by"):
        plan_training_offload("gpt3-175b", "1 x rtx-4090", 1, 1024, 16, "zero-infinity",
                              host_memory="host-ddr5:128GiB", nvme="nvme-gen4,nvme-gen4", top=3, db=db)
