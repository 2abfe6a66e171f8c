"""Model architectures: one schema for dense, GQA, MoE and MLA transformers, and their parameter counts.

Parameter counts are computed from the architecture, never typed in. Per layer (h hidden, a heads,
k KV heads, d head dim, f FFN width, E experts, K top-k, S shared experts):

* attention, standard: ``q = h·a·d``, ``k, v = h·k·d`` each, ``o = a·d·h``;
* attention, MLA (DeepSeek-V2/V3, arXiv:2405.04434 §2.1): ``q = h·r_q + r_q·a·(d_nope + d_rope)``
  (or ``h·a·(d_nope + d_rope)`` without a q LoRA), ``kv_a = h·(r_kv + d_rope)``,
  ``kv_b = r_kv·a·(d_nope + d_v)``, ``o = a·d_v·h``, plus the two LoRA RMSNorms;
* MLP: ``3·h·f`` gated (SwiGLU, GeGLU), ``2·h·f`` otherwise (GELU, ReLU, squared ReLU);
* MoE layer: router ``h·E``, ``E`` routed experts and ``S`` shared experts, each an MLP; the active
  count takes ``K`` routed experts instead of ``E``;
* norms: one weight vector (two with a bias, LayerNorm) of width h, twice per layer, once at the end.

Embedding ``V·h``, an LM head of ``V·h`` unless tied, learned positions ``P·h``. A multi-token-prediction
module (DeepSeek-V3's MTP) is not part of the served model and is not counted, as in the paper's 671B.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError, UnknownIdError, format_validation_error

Family = Literal["gpt", "llama", "deepseek", "mixtral", "qwen-moe", "gpt-oss"]
Activation = Literal["gelu", "relu", "relu2", "swiglu", "geglu"]
GATED = {"swiglu", "geglu"}

# Family defaults applied to an inline or catalog architecture before validation (SCHEMA.md).
FAMILY_DEFAULTS: dict[str, dict] = {
    "gpt": {"activation": "gelu", "norm": "layernorm", "position": "learned", "attention_bias": True,
            "mlp_bias": True, "tied_embeddings": True, "vocab": 50257},  # GPT-2/GPT-3 BPE (Radford et al. 2019)
    "llama": {"activation": "swiglu", "norm": "rmsnorm", "position": "rope", "tied_embeddings": False},
    "mixtral": {"activation": "swiglu", "norm": "rmsnorm", "position": "rope", "tied_embeddings": False},
    "qwen-moe": {"activation": "swiglu", "norm": "rmsnorm", "position": "rope", "tied_embeddings": False},
    "deepseek": {"activation": "swiglu", "norm": "rmsnorm", "position": "rope", "tied_embeddings": False},
    "gpt-oss": {"activation": "swiglu", "norm": "rmsnorm", "position": "rope", "tied_embeddings": False,
                "attention_bias": True, "expert_bias": True},
}


class Published(BaseModel):
    """Parameter counts as their authors state them, for comparison only (never used in estimates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    params_total: float
    params_active: float | None = None
    active_excludes_embedding: bool = Field(
        default=False, description="the authors' active count leaves out the input embedding table"
    )
    source: str


class ModelArch(BaseModel):
    """A transformer LM's architecture: everything the performance model needs, nothing it does not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = "custom"
    name: str | None = None
    family: Family = "llama"
    source: str | None = Field(default=None, description="where the architecture was read (config.json URL, paper)")
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0, description="q/k head width (the non-rotary part for MLA)")
    ffn_hidden: int | None = Field(default=None, gt=0, description="dense MLP width")
    vocab: int = Field(gt=0)
    tied_embeddings: bool = False
    activation: Activation = "swiglu"
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    position: Literal["learned", "rope", "alibi"] = "rope"
    max_position: int | None = Field(default=None, gt=0)
    attention_bias: bool = Field(default=False, description="biases on q, k, v and o (GPT-2/3, OPT, gpt-oss)")
    qkv_bias: bool = Field(default=False, description="biases on the q, k, v projections only (Qwen2)")
    mlp_bias: bool = Field(default=False, description="biases in the dense MLP and shared experts (GPT-2/3, OPT)")
    qk_norm: bool = Field(default=False, description="per-head RMSNorm on q and k (Qwen3)")
    parallel_block: bool = False
    sliding_window: int | None = Field(default=None, gt=0)
    sliding_window_layers: int | None = Field(
        default=None, ge=0, description="layers using the sliding window (default: all, when a window is set)"
    )
    # MoE
    experts: int = Field(default=0, ge=0)
    top_k: int = Field(default=0, ge=0)
    shared_experts: int = Field(default=0, ge=0)
    expert_ffn_hidden: int | None = Field(default=None, gt=0)
    shared_expert_ffn_hidden: int | None = Field(default=None, gt=0, description="default expert_ffn_hidden")
    dense_layers: int = Field(default=0, ge=0, description="leading layers with a dense MLP in an MoE model")
    expert_bias: bool = Field(default=False, description="biases in expert MLPs and the router (gpt-oss)")
    balanced_routing: bool = False
    # MLA
    kv_lora_rank: int | None = Field(default=None, gt=0)
    q_lora_rank: int | None = Field(default=None, gt=0)
    rope_head_dim: int | None = Field(default=None, gt=0)
    v_head_dim: int | None = Field(default=None, gt=0)
    published: Published | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ModelArch":
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"kv_heads: {self.kv_heads} must divide heads ({self.heads})")
        if self.is_moe:
            if not self.top_k or self.top_k > self.experts:
                raise ValueError(f"top_k: expected 1..experts ({self.experts}) for an MoE model, got {self.top_k}")
            if self.dense_layers > self.layers:
                raise ValueError(f"dense_layers: {self.dense_layers} exceeds layers ({self.layers})")
        elif self.top_k or self.shared_experts:
            raise ValueError("experts: top_k/shared_experts given but experts is 0")
        if self.is_mla and (self.rope_head_dim is None or self.v_head_dim is None):
            raise ValueError("rope_head_dim: MLA (kv_lora_rank set) also needs rope_head_dim and v_head_dim")
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"head_dim: hidden ({self.hidden}) is not divisible by heads ({self.heads}); give head_dim")
        if self.dense_mlp_layers and self.ffn_hidden is None and self.family != "gpt":
            raise ValueError("ffn_hidden: required for the dense MLP layers")
        if self.sliding_window_layers is not None and self.sliding_window_layers > self.layers:
            raise ValueError(f"sliding_window_layers: exceeds layers ({self.layers})")
        return self

    # -- derived shape ----------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def d_ffn(self) -> int:
        return self.ffn_hidden or 4 * self.hidden

    @property
    def d_expert(self) -> int:
        return self.expert_ffn_hidden or self.d_ffn

    @property
    def d_shared_expert(self) -> int:
        return self.shared_expert_ffn_hidden or self.d_expert

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def dense_mlp_layers(self) -> int:
        return self.layers - self.moe_layers

    # -- parameter counts (see module docstring) ---------------------------------------------------
    def _norm_params(self) -> int:
        return self.hidden * (2 if self.norm == "layernorm" else 1)

    def attention_params(self) -> int:
        """Weights (and biases) of one attention block."""
        h, a = self.hidden, self.heads
        if self.is_mla:
            d_qk = self.d_head + self.rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * a * d_qk
            else:
                q = h * a * d_qk
            kv = h * (self.kv_lora_rank + self.rope_head_dim) + self.kv_lora_rank
            kv += self.kv_lora_rank * a * (self.d_head + self.v_head_dim)
            return q + kv + a * self.v_head_dim * h
        d, k = self.d_head, self.n_kv_heads
        n = 2 * h * a * d + 2 * h * k * d
        if self.attention_bias:
            n += a * d + 2 * k * d + h
        elif self.qkv_bias:
            n += a * d + 2 * k * d
        if self.qk_norm:
            n += 2 * d
        return n

    def mlp_params(self, width: int, bias: bool | None = None) -> int:
        """One MLP (or one expert) of inner width ``width``."""
        bias = self.mlp_bias if bias is None else bias
        gated = self.activation in GATED
        n = (3 if gated else 2) * self.hidden * width
        if bias:
            n += (2 if gated else 1) * width + self.hidden
        return n

    def moe_params(self, active: bool) -> int:
        """Router plus routed experts (all, or the top-k a token uses) plus shared experts, one layer."""
        routed = self.top_k if active else self.experts
        router = self.hidden * self.experts + (self.experts if self.expert_bias else 0)
        expert = self.mlp_params(self.d_expert, bias=self.expert_bias)
        shared = self.shared_experts * self.mlp_params(self.d_shared_expert)
        return router + routed * expert + shared

    def embedding_params(self) -> int:
        n = self.vocab * self.hidden
        if self.position == "learned":
            n += (self.max_position or 2048) * self.hidden
        return n

    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    def _count(self, active: bool) -> int:
        per_layer_common = self.attention_params() + 2 * self._norm_params()
        n = self.layers * per_layer_common
        n += self.dense_mlp_layers * self.mlp_params(self.d_ffn)
        n += self.moe_layers * self.moe_params(active)
        n += self._norm_params() + self.embedding_params() + self.lm_head_params()
        return n

    @property
    def params_total(self) -> int:
        return self._count(active=False)

    @property
    def params_active(self) -> int:
        """Parameters one token touches: all but the routed experts it is not sent to."""
        return self._count(active=True)

    def summary(self) -> dict:
        """The architecture fields plus computed counts, as `models show --json` prints them."""
        out = {"id": self.id, "params_total": self.params_total, "params_active": self.params_active}
        out.update(self.model_dump(exclude={"id", "published"}, exclude_none=True))
        out["head_dim"] = self.d_head
        out["kv_heads"] = self.n_kv_heads
        if self.published is not None:
            out["published"] = self.published.model_dump(exclude_none=True)
        return out


def build_arch(raw: dict, where: str) -> ModelArch:
    """A ModelArch from a mapping: ``base:`` catalog id, family defaults, then the given fields."""
    raw = dict(raw)
    base_id = raw.pop("base", None)
    merged: dict = {}
    if base_id is not None:
        merged = catalog_raw(str(base_id), where=f"{where}: base")
        merged.pop("published", None)
    family = raw.get("family", merged.get("family", "llama"))
    out = {**FAMILY_DEFAULTS.get(family, {}), **merged, **raw}
    try:
        return ModelArch.model_validate(out)
    except ValidationError as e:
        raise InputError(format_validation_error(e, where)) from None


def _catalog_path() -> Path:
    return Path(__file__).resolve().parent / "catalog" / "models.yaml"


@functools.lru_cache(maxsize=1)
def _catalog_raw() -> dict[str, dict]:
    data = yaml.safe_load(_catalog_path().read_text(encoding="utf-8"))
    out: dict[str, dict] = {}
    for item in data:
        out[item["id"]] = item
    return out


def catalog_raw(model_id: str, where: str = "--model") -> dict:
    cat = _catalog_raw()
    if model_id not in cat:
        raise UnknownIdError("model", model_id, cat)
    return dict(cat[model_id])


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, ModelArch]:
    """Every catalog model by id."""
    return {mid: build_arch(raw, f"{_catalog_path()}: {mid}") for mid, raw in _catalog_raw().items()}


def get_model(spec: str | dict | ModelArch) -> ModelArch:
    """A catalog id, a path to a Hugging Face ``config.json``, or an inline architecture mapping."""
    if isinstance(spec, ModelArch):
        return spec
    if isinstance(spec, dict):
        return build_arch(spec, "model")
    text = str(spec)
    path = Path(text).expanduser()
    if text.endswith(".json") or path.is_file():
        from .hf_config import arch_from_hf_config

        return arch_from_hf_config(path)
    cat = catalog()
    if text in cat:
        return cat[text]
    raise UnknownIdError("model", text, cat)
