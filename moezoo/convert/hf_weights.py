"""transformers state dicts <-> moezoo state dicts.

moezoo's module names are transformers' without the ``model.`` prefix, so most keys
map one to one. The differences are the MoE blocks, named per family in
:mod:`moezoo.convert.families`:

* the router is ``mlp.gate`` in transformers (``block_sparse_moe.gate`` in original
  Mixtral files: the family's ``moe_block``) and ``mlp.router`` in moezoo;
* experts come either fused, as transformers 5 holds them in memory
  (``experts.gate_up_proj`` ``(E, 2I, H)`` and ``experts.down_proj`` ``(E, H, I)``, which
  is moezoo's layout), or per expert, as every published checkpoint (and transformers'
  own ``save_pretrained``) stores them: ``experts.{e}.{gate,up,down}_proj.weight`` or
  Mixtral's ``experts.{e}.w1/w3/w2.weight`` (the family's ``expert_projections``);
* Qwen2-MoE's ``shared_expert`` is moezoo's ``shared_experts``;
* a family's own module names (its ``weight_names``: Phi's ``self_attn.dense``, ``mlp.fc1`` /
  ``fc2``, ``q_layernorm``, ``final_layernorm``);
* StableLM's per-head q/k LayerNorms ``q_layernorm.norms.{h}.weight`` are rows of moezoo's
  ``q_norm.weight`` ``(H, hd)``;
* Phi-3's fused ``self_attn.qkv_proj`` (q rows, then k, then v) and dense ``mlp.gate_up_proj``
  (gate rows, then up) are split into moezoo's separate projections on import and fused back on
  export.

Reading accepts every family's names whatever the checkpoint's ``model_type``, so a
file written by another tool in the other layout still loads.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch

from moezoo.convert.families import FAMILIES, text_family
from moezoo.models.lm.config import LMConfig

_ROLES = ("gate", "up", "down")
# Per-expert projection names of every family -> the role of the weight.
_EXPERT_ROLES = {name: role for f in FAMILIES.values() for role, name in zip(_ROLES, f.expert_projections)}
_PER_EXPERT = re.compile(rf"^layers\.(\d+)\.mlp\.experts\.(\d+)\.({'|'.join(_EXPERT_ROLES)})\.weight$")
# Family-specific MoE block names, read as moezoo's (and transformers 5's) ``mlp``.
_MOE_BLOCKS = sorted({f.moe_block for f in FAMILIES.values()} - {"mlp"})
# Every family's module names -> moezoo's (read whatever the model_type).
_HF_NAMES = {hf: ours for f in FAMILIES.values() for ours, hf in f.weight_names.items()}
_PER_HEAD_NORM = re.compile(r"^layers\.(\d+)\.self_attn\.(q_norm|k_norm)\.norms\.(\d+)\.weight$")
_FUSED_QKV = re.compile(r"^(layers\.\d+\.self_attn)\.qkv_proj\.(weight|bias)$")
_FUSED_GATE_UP = re.compile(r"^(layers\.\d+\.mlp)\.gate_up_proj\.(weight|bias)$")  # dense; experts have no suffix


def _rename(name: str, names: dict[str, str]) -> str:
    """``name`` with each whole dotted path of ``names`` replaced (``norm.`` but not ``q_norm.``)."""
    for old, new in names.items():
        name = re.sub(rf"(^|\.){re.escape(old)}(?=\.)", rf"\g<1>{new}", name)
    return name


def hf_to_moezoo(state: dict[str, torch.Tensor], config: LMConfig) -> dict[str, torch.Tensor]:
    """Rename and fuse a transformers state dict into moezoo's names and layout.

    Keys that moezoo does not know are kept under their (renamed) name, so that the
    loader reports them as unexpected instead of silently dropping weights.
    """
    out: dict[str, torch.Tensor] = {}
    per_expert: dict[int, dict[str, dict[int, torch.Tensor]]] = defaultdict(lambda: defaultdict(dict))
    per_head: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
    c = config
    qkv_sizes = [c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.num_kv_heads * c.head_dim]
    for key, tensor in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue  # a buffer some old checkpoints saved; recomputed from the config
        name = key[len("model."):] if key.startswith("model.") else key
        for block in _MOE_BLOCKS:
            name = name.replace(f".{block}.", ".mlp.")
        name = re.sub(r"\.mlp\.gate\.weight$", ".mlp.router.weight", name)
        name = name.replace(".mlp.shared_expert.", ".mlp.shared_experts.")
        name = _rename(name, _HF_NAMES)
        match = _PER_EXPERT.match(name)
        if match:
            layer, expert, proj = int(match[1]), int(match[2]), match[3]
            per_expert[layer][_EXPERT_ROLES[proj]][expert] = tensor
            continue
        if match := _PER_HEAD_NORM.match(name):
            per_head[f"layers.{match[1]}.self_attn.{match[2]}.weight"][int(match[3])] = tensor
        elif match := _FUSED_QKV.match(name):
            if tensor.shape[0] != sum(qkv_sizes):
                raise ValueError(f"{key} has {tensor.shape[0]} rows; q, k and v of this config take "
                                 f"{' + '.join(map(str, qkv_sizes))}")
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), tensor.split(qkv_sizes)):
                out[f"{match[1]}.{proj}.{match[2]}"] = part.clone()
        elif match := _FUSED_GATE_UP.match(name):
            for proj, part in zip(("gate_proj", "up_proj"), tensor.chunk(2)):
                out[f"{match[1]}.{proj}.{match[2]}"] = part.clone()
        else:
            out[name] = tensor
    for name, heads in per_head.items():
        if sorted(heads) != list(range(len(heads))):
            raise ValueError(f"per-head norm weights of {name} are not numbered 0..{len(heads) - 1}: {sorted(heads)}")
        out[name] = torch.stack([heads[h] for h in range(len(heads))])  # (H, hd)
    if config.tie_embeddings and "lm_head.weight" in out:
        out.pop("lm_head.weight")  # some tied checkpoints store the shared matrix twice
    for layer, roles in per_expert.items():
        out.update(_fuse_experts(layer, roles, config))
    return out


def _fuse_experts(layer: int, roles: dict[str, dict[int, torch.Tensor]], config: LMConfig) -> dict[str, torch.Tensor]:
    prefix = f"layers.{layer}.mlp.experts"
    num_experts = config.moe.num_experts if config.moe is not None else 0
    missing = [f"{prefix}.{e}.{role}" for role in ("gate", "up", "down") for e in range(num_experts)
               if e not in roles.get(role, {})]
    extra = [f"{prefix}.{e}.{role}" for role, by_e in roles.items() for e in by_e if e >= num_experts]
    if missing or extra or not num_experts:
        raise ValueError(f"per-expert weights of layer {layer} do not match num_experts={num_experts}: "
                         f"missing {missing[:10]}, unexpected {extra[:10]}")
    gate_up = torch.stack([torch.cat([roles["gate"][e], roles["up"][e]], dim=0) for e in range(num_experts)])
    down = torch.stack([roles["down"][e] for e in range(num_experts)])
    return {f"{prefix}.gate_up_proj": gate_up, f"{prefix}.down_proj": down}  # (E, 2I, H), (E, H, I)


def moezoo_to_hf(state: dict[str, torch.Tensor], config: LMConfig, family: str,
                 expert_layout: str = "per_expert") -> dict[str, torch.Tensor]:
    """moezoo state dict -> transformers keys for ``family``.

    Args:
        expert_layout: ``"per_expert"`` (what transformers' ``save_pretrained`` and published
            checkpoints use) or ``"fused"`` (transformers 5's in-memory 3-D tensors).

    Example:
        >>> cfg = LMConfig(vocab_size=8, dim=4, num_layers=1, num_heads=1, ffn_dim=8)
        >>> list(moezoo_to_hf({"layers.0.mlp.experts.down_proj": torch.zeros(2, 4, 3)}, cfg, "mixtral"))
        ['model.layers.0.block_sparse_moe.experts.0.w2.weight', 'model.layers.0.block_sparse_moe.experts.1.w2.weight']
    """
    if expert_layout not in ("per_expert", "fused"):
        raise ValueError(f"expert_layout={expert_layout!r}; use 'per_expert' or 'fused'")
    f = text_family(family)
    block = f.moe_block if expert_layout == "per_expert" else "mlp"  # fused is transformers 5's in-memory naming
    names = dict(zip(_ROLES, f.expert_projections))
    out: dict[str, torch.Tensor] = {}
    if f.fused_projections:
        state = _fuse_projections(state)
    for key, tensor in state.items():
        if key.startswith("lm_head."):
            out[key] = tensor
            continue
        name = _rename(key, dict(f.weight_names))
        if f.qk_norm == "each_head" and re.search(r"\.[qk]_layernorm\.weight$", name):
            for h in range(tensor.shape[0]):  # StableLmLayerNormPerHead: one LayerNorm per head
                out["model." + name.replace("_layernorm.weight", f"_layernorm.norms.{h}.weight")] = tensor[h]
            continue
        name = name.replace(".mlp.shared_experts.", ".mlp.shared_expert.")
        name = re.sub(r"\.mlp\.router\.weight$", f".{block}.gate.weight", name)
        match = re.match(r"^(layers\.\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", name)
        if match and expert_layout == "per_expert":
            for e in range(tensor.shape[0]):
                base = f"model.{match[1]}.{block}.experts.{e}"
                if match[2] == "down_proj":
                    out[f"{base}.{names['down']}.weight"] = tensor[e]
                else:
                    gate, up = tensor[e].chunk(2, dim=0)
                    out[f"{base}.{names['gate']}.weight"], out[f"{base}.{names['up']}.weight"] = gate, up
            continue
        out["model." + name] = tensor
    return out


def _fuse_projections(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """q/k/v -> ``qkv_proj`` and a dense layer's gate/up -> ``gate_up_proj`` (Phi-3), in place of q and gate."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        attn = re.match(r"^(layers\.\d+\.self_attn)\.([qkv])_proj\.(weight|bias)$", key)
        mlp = re.match(r"^(layers\.\d+\.mlp)\.(gate|up)_proj\.(weight|bias)$", key)
        if attn and attn[2] == "q":
            parts = [state[f"{attn[1]}.{p}_proj.{attn[3]}"] for p in "qkv"]
            out[f"{attn[1]}.qkv_proj.{attn[3]}"] = torch.cat(parts)
        elif mlp and mlp[2] == "gate":
            out[f"{mlp[1]}.gate_up_proj.{mlp[3]}"] = torch.cat([tensor, state[f"{mlp[1]}.up_proj.{mlp[3]}"]])
        elif not (attn or mlp):
            out[key] = tensor
    return out
