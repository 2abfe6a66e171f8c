"""Shared fixtures: the repo paths and the IDS.md id lists (from ../shared when it is beside the checkout)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SHARED_IDS = ROOT.parent / "shared" / "validation" / "IDS.md"

# A copy of ../shared/validation/IDS.md (2026-11), so the check runs without the shared folder too.
IDS = {
    "accelerator": """a100-sxm-40gb a100-sxm-80gb a100-pcie-80gb h100-sxm h100-pcie h100-nvl h800-sxm h200-sxm
        gh200-96gb gh200-144gb b200 gb200 gb300 l4 l40s a10g rtx-4090 mi250x mi250x-gcd mi300x mi325x mi355x
        gaudi2 gaudi3 tpu-v5e tpu-v5p ascend-910c""".split(),
    "system": """dgx-a100 dgx-a100-40gb dgx-h100 hgx-h200 h800-node dgx-b200 gb200-nvl72 gb300-nvl72 gh200-node
        gh200-144gb-node frontier-node mi300x-8 mi325x-8 mi355x-8 cloudmatrix384""".split(),
    "tier": "host-ddr5 lpddr5x-grace cxl-aic-x8 cxl-aic-x16 nvme-gen4 nvme-gen5 hbm-pim aim-gddr6".split(),
    "link": """pcie4-x16 pcie5-x16 nvlink3 nvlink4 nvlink5 nvlink-c2c xgmi3 xgmi4 ib-hdr-200 ib-ndr-400
        ib-xdr-800 roce-200 roce-400 slingshot-11 ethernet-100""".split(),
    "model": """gpt3-175b llama-2-7b llama-2-13b llama-2-70b llama-3-8b llama-3-70b llama-3.1-8b llama-3.1-70b
        llama-3.1-405b llama-3.3-70b mixtral-8x7b mixtral-8x22b deepseek-v3 qwen3-30b-a3b qwen3-235b-a22b
        gpt-oss-120b mpt-7b mpt-30b mpt-70b nemotron-4-340b falcon-180b opt-66b kimi-k2""".split(),
}

_SECTIONS = {
    "Accelerators": "accelerator",
    "Systems": "system",
    "Memory and storage tiers": "tier",
    "Links and networks": "link",
    "Models": "model",
}


def ids_from_shared() -> dict[str, list[str]] | None:
    """Parse IDS.md when ../shared is present: the first comma-separated run of ids in each section."""
    if not SHARED_IDS.is_file():
        return None
    out: dict[str, list[str]] = {}
    for block in SHARED_IDS.read_text().split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        kind = next((k for t, k in _SECTIONS.items() if title.startswith(t)), None)
        if kind is None:
            continue
        body = re.sub(r"\([^)]*\)", "", body)  # drop the parenthesised descriptions
        body = body.split("A system may also")[0].split("A catalog entry")[0]
        tokens = (t.rstrip(".") for t in re.split(r"[,\s]+", body))
        out[kind] = [t for t in tokens if re.fullmatch(r"[a-z0-9][a-z0-9.\-]*[a-z0-9]", t)]
    return out


@pytest.fixture(scope="session")
def db():
    from perfmodel.specdb import load_database

    return load_database()


@pytest.fixture
def write(tmp_path):
    """Write a text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    return _write
