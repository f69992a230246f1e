"""MoME-style mixture-of-experts feed-forward: top-k routed experts plus always-on shared experts.

One router serves every granularity (it is one module, whatever the merge ratio of the tokens it
sees). The load-balancing loss is the Switch Transformer one: num_experts * sum_e f_e * p_e, with
f_e the fraction of routed slots that went to expert e and p_e its mean router probability; it is
1.0 when routing is uniform.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from asr.config import MoEConfig
from asr.model.dropout import Dropout


class Expert(nn.Module):
    def __init__(self, d_model: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.act = nn.SiLU()
        self.dropout = Dropout(dropout)
        self.down = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(self.act(self.up(x))))


class MoEFeedForward(nn.Module):
    """Drop-in for the Conformer feed-forward: (B, T, D) -> (B, T, D), plus a balance loss."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float, config: MoEConfig) -> None:
        super().__init__()
        if config.num_experts < 1 or not 1 <= config.top_k <= config.num_experts or config.num_shared < 0:
            raise ValueError(f"MoE needs num_experts >= 1, 1 <= top_k <= num_experts, num_shared >= 0; got {config}")
        hidden = config.expert_dim or max(1, ff_dim // (config.top_k + config.num_shared))
        self.top_k = config.top_k
        self.num_experts = config.num_experts
        self.norm = nn.LayerNorm(d_model)
        self.router = nn.Linear(d_model, config.num_experts, bias=False)
        self.experts = nn.ModuleList(Expert(d_model, hidden, dropout) for _ in range(config.num_experts))
        self.shared = nn.ModuleList(Expert(d_model, hidden, dropout) for _ in range(config.num_shared))
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, lens: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, T, D); lens: (B,) real tokens (padding is neither routed nor counted)."""
        batch, num, dim = x.shape
        h = self.norm(x)
        flat = h.reshape(-1, dim)
        real = (torch.arange(num, device=x.device)[None] < lens[:, None]).reshape(-1) if lens is not None \
            else torch.ones(flat.shape[0], dtype=torch.bool, device=x.device)
        probs = self.router(flat).float().softmax(-1)  # (N, E)
        top_p, top_e = probs.topk(self.top_k, dim=-1)  # (N, k)
        # Gate = the router probability itself (as in Switch): renormalising top-1 would make it
        # a constant 1 and leave the router without a gradient from the task loss.
        gates = top_p.to(x.dtype)
        out = torch.zeros_like(flat)
        for shared in self.shared:
            out = out + shared(flat)
        rows = real.nonzero().squeeze(1)
        for e, expert in enumerate(self.experts):
            hit = (top_e[rows] == e)  # (n, k)
            slot_rows = hit.any(-1).nonzero().squeeze(1)
            if slot_rows.numel() == 0:
                continue
            token = rows[slot_rows]
            gate = (gates[token] * hit[slot_rows]).sum(-1, keepdim=True)
            out = out.index_add(0, token, expert(flat[token]) * gate)
        if rows.numel():
            fraction = torch.zeros(self.num_experts, device=x.device).index_add(
                0, top_e[rows].reshape(-1), torch.ones(rows.numel() * self.top_k, device=x.device))
            fraction = fraction / (rows.numel() * self.top_k)
            balance = self.num_experts * (fraction * probs[rows].mean(0)).sum()
        else:
            balance = probs.sum() * 0.0
        return self.dropout(out.view(batch, num, dim)), balance


@torch.no_grad()
def upcycle_from_dense(moe: MoEFeedForward, dense: dict[str, Tensor]) -> bool:
    """Initialise `moe` from a dense feed-forward's weights (`FeedForward` state dict: net.0 norm,
    net.1 up, net.4 down): the hidden units are split into consecutive slices, one per shared
    expert and one more that every routed expert copies; the router stays random. With top-1
    routing the output then starts as the dense layer's with its last slice weighted by the router
    probability. Returns False (and changes nothing) when the sizes do not divide that way."""
    up_w, up_b, down_w, down_b = dense["net.1.weight"], dense["net.1.bias"], dense["net.4.weight"], dense["net.4.bias"]
    hidden = moe.experts[0].up.out_features
    if moe.top_k != 1 or up_w.shape[0] != hidden * (len(moe.shared) + 1) or up_w.shape[1] != moe.norm.normalized_shape[0]:
        return False
    moe.norm.weight.copy_(dense["net.0.weight"])
    moe.norm.bias.copy_(dense["net.0.bias"])
    slices = [slice(i * hidden, (i + 1) * hidden) for i in range(len(moe.shared) + 1)]
    for i, expert in enumerate([*moe.shared, *moe.experts]):
        part = slices[min(i, len(slices) - 1)]
        expert.up.weight.copy_(up_w[part])
        expert.up.bias.copy_(up_b[part])
        expert.down.weight.copy_(down_w[:, part])
        expert.down.bias.copy_(down_b if i == 0 else torch.zeros_like(down_b))
    return True
