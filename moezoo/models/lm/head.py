"""The LM head, with a backward that multiplies only the positions that carry a loss.

Instruction tuning supervises the answer tokens only: in a LLaVA batch most positions
(the prompt, the image tokens, the padding) have label -100, so their rows of the
logits' gradient are exactly zero. Autograd's ``linear`` backward still multiplies all
of them, in two GEMMs as wide as the vocabulary. :class:`SupervisedRowsLinear` finds
the rows with a non-zero gradient and runs both GEMMs on those rows only; the result is
the same sum (zero rows add nothing; only the order of the additions in the weight
gradient's reduction changes). With every row supervised it runs autograd's own GEMMs.
It looks at the gradient itself, not at the labels, so it stays correct whatever else
a caller backpropagates through the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moezoo.moe.threads import decoding_linear


class SupervisedRowsLinear(torch.autograd.Function):
    """``x (..., D) @ weight (V, D).T``; the backward skips the rows whose gradient is all zero."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_NV, x_ND = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        rows = grad_NV.ne(0).any(-1).nonzero().squeeze(1)  # one host sync per step
        subset = rows.numel() < grad_NV.shape[0]
        if subset:
            grad_NV, x_ND = grad_NV[rows], x_ND[rows]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x_ND = grad_NV @ weight
            if subset:
                grad_x_ND = x.new_zeros(x.reshape(-1, x.shape[-1]).shape).index_copy_(0, rows, grad_x_ND)
            grad_x = grad_x_ND.view_as(x)
        if ctx.needs_input_grad[1]:
            grad_w = grad_NV.t() @ x_ND
        return grad_x, grad_w


def lm_head(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Logits ``(..., V)`` of hidden states ``x (..., D)``: in training through
    :class:`SupervisedRowsLinear`, otherwise :func:`~moezoo.moe.threads.decoding_linear`
    (a decoding step reads the weight on all threads).

    Example:
        >>> x, w = torch.randn(3, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
        >>> lm_head(x, w)[0].sum().backward()  # only row 0 carries a gradient
        >>> torch.allclose(w.grad, x[0].detach().expand(5, 4)), x.grad[1:].abs().sum().item()
        (True, 0.0)
    """
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        device = x.device.type
        if torch.is_autocast_enabled(device):  # mixed precision: compute in the autocast dtype, grads back to fp32
            dtype = torch.get_autocast_dtype(device)
            with torch.autocast(device, enabled=False):
                return SupervisedRowsLinear.apply(x.to(dtype), weight.to(dtype))
        return SupervisedRowsLinear.apply(x, weight)
    return decoding_linear(x, weight)
