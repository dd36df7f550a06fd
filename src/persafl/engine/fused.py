"""Fused SGD steps for stacked fully connected models: ``base - lr * grad f(at)`` in one pass.

Every method's arithmetic ends in steps of the form ``new = base - lr * grad f(at; x, y)`` (plain
SGD: ``base = at``; MAML's outer step: ``at`` the adapted model, ``base`` the model; the Moreau
inner step: ``base`` the anchored, shrunk theta). With autograd, such a step writes the
gradient, then reads it and the parameters again to write the new parameters. For a stacked
client model whose weights are each used for a batch of only 20 samples, that traffic, not the
arithmetic, bounds the step (benchmarks/README.md). For models made only of ``Flatten``,
``Linear`` and elementwise activations, this module writes the backward pass by hand so that
each weight update is ONE ``baddbmm``: ``W_new = W_base - lr * dZ^T A`` (no gradient tensor).

Manual backpropagation of the mean cross-entropy for client c (B samples), layer l with input
``A_l`` [C, B, in], pre-activation ``Z_l = A_l W_l^T + b_l``:

    dZ_L = (softmax(Z_L) - onehot(y)) / B
    dW_l = dZ_l^T A_l,   db_l = sum_b dZ_l,   dA_l = dZ_l W_l,   dZ_{l-1} = dA_l * act'(Z_{l-1})

with ``act'`` of ReLU ``1[z > 0]`` (autograd's convention at 0), softplus ``sigmoid(z)``, tanh
``1 - tanh(z)^2``. Tested against autograd for every activation (tests/test_fused.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
# descend(at, x, y, lr, base, inplace) -> base - lr * grad f(at; x, y), stacked [C, ...] params.
Descend = Callable[[Params, Tensor, Tensor, float, "Params | None", bool], Params]


# Backward of an activation, in place on ``delta`` (a fresh tensor from bmm) or into a new
# tensor: dZ = dA * act'(z) given the pre-activation z and the activation output.
def _relu_backward(delta: Tensor, z: Tensor, out: Tensor) -> Tensor:
    # autograd's own ReLU backward (0 where z <= 0, so at z = 0 too): one kernel, where
    # ``masked_fill_(z <= 0, 0)`` first wrote a bool mask; the same values, about 15x faster
    # on a stack of MNIST MLP activations (benchmarks/README.md)
    return torch.ops.aten.threshold_backward(delta, z, 0.0)


def _softplus_backward(delta: Tensor, z: Tensor, out: Tensor) -> Tensor:
    return delta.mul_(torch.sigmoid(z))


def _tanh_backward(delta: Tensor, z: Tensor, out: Tensor) -> Tensor:
    return delta.mul_(1.0 - out * out)


# activation module type -> backward (default parameters only; see _plan)
_BACKWARD: dict[type, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    nn.ReLU: _relu_backward,
    nn.Softplus: _softplus_backward,
    nn.Tanh: _tanh_backward,
}


def _logits_grad(logits: Tensor, y: Tensor) -> Tensor:
    """dZ of the per-client mean cross-entropy at logits [C, B, K]: (softmax - onehot) / B."""
    delta = torch.softmax(logits, dim=-1)
    delta.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(delta[..., :1], -1.0))
    return delta.mul_(1.0 / int(logits.shape[1]))


def _layer_update(
    weight: Tensor, bias: Tensor, delta: Tensor, inp: Tensor | None, lr: float, inplace: bool
) -> tuple[Tensor, Tensor]:
    """A Linear layer's ``(W, b) - lr * (dZ^T A, sum_b dZ)``: into ``weight`` and ``bias`` with
    ``inplace`` (the caller owns them), else as new tensors; the same kernels either way."""
    if inplace:
        return weight.baddbmm_(delta.transpose(1, 2), inp, alpha=-lr), bias.add_(
            delta.sum(1), alpha=-lr
        )
    return torch.baddbmm(weight, delta.transpose(1, 2), inp, alpha=-lr), torch.add(
        bias, delta.sum(1), alpha=-lr
    )


def _layer_forward(name: str, layer: nn.Module, params: Params, hidden: Tensor) -> Tensor:
    """One layer on stacked inputs [C, B, in]: a Linear as ``baddbmm`` with the clients' own
    weights ``params[name.weight]`` [C, out, in], anything else as the module itself."""
    if isinstance(layer, nn.Linear):
        weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
        return torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
    return layer(hidden)


def _plan(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The model's layers if it is a fusable stack (Flatten first, Linear and default
    activations after, a Linear last); None otherwise."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model.named_children())
    if not layers or not isinstance(layers[-1][1], nn.Linear):
        return None
    for index, (_, layer) in enumerate(layers):
        if isinstance(layer, nn.Flatten):
            if index != 0:
                return None
        elif isinstance(layer, nn.Softplus):
            if layer.beta != 1.0 or layer.threshold != 20.0:
                return None
        elif not isinstance(layer, (nn.Linear, nn.ReLU, nn.Tanh)):
            return None
    return layers


def supports(model: nn.Module) -> bool:
    """Whether :func:`make_descend` can fuse steps of ``model``."""
    return _plan(model) is not None


def make_descend(model: nn.Module) -> Descend:
    """``descend(at, x, y, lr, base=None, inplace=False)`` for C stacked clients of a fusable
    ``model``.

    ``at``, ``base``: params [C, ...] (``base`` defaults to ``at``); ``x`` [C, B, *features];
    ``y`` [C, B]. Returns ``base - lr * grad_at mean_b CE(model(at; x), y)`` per client, as new
    tensors (nothing is modified in place). With ``inplace`` the result is written into
    ``base``'s tensors instead (the caller owns them; ``base`` may be ``at``: each weight is
    read for the backward pass before it is overwritten). Same kernels, same bits; it spares
    writing a fresh full-size tensor per step, which for a stack of MNIST MLPs costs as much as
    the update's arithmetic (benchmarks/README.md).
    """
    layers = _plan(model)
    if layers is None:
        raise TypeError(f"fused steps need Flatten/Linear/activation layers, got {model}")

    def descend(
        at: Params,
        x: Tensor,
        y: Tensor,
        lr: float,
        base: Params | None = None,
        inplace: bool = False,
    ) -> Params:
        base = at if base is None else base
        clients, batch = int(x.shape[0]), int(x.shape[1])
        hidden = x.reshape(clients, batch, -1)
        # forward, keeping each Linear's input and each activation's (input, output)
        saved: list[tuple[str, nn.Module, Tensor, Tensor]] = []
        for name, layer in layers:
            if isinstance(layer, nn.Flatten):
                continue
            out = _layer_forward(name, layer, at, hidden)
            saved.append((name, layer, hidden, out))
            hidden = out
        delta = _logits_grad(hidden, y)
        new: Params = {}
        for index in range(len(saved) - 1, -1, -1):
            name, layer, inp, out = saved[index]
            if isinstance(layer, nn.Linear):
                weight = at[f"{name}.weight"]
                # the input gradient first (from the weight at ``at``), unless it is the data
                grad_in = torch.bmm(delta, weight) if index > 0 else None
                w, b = f"{name}.weight", f"{name}.bias"
                new[w], new[b] = _layer_update(base[w], base[b], delta, inp, lr, inplace)
                delta = grad_in
            else:
                delta = _BACKWARD[type(layer)](delta, inp, out)
        return {key: new[key] for key in base}

    return descend


def make_prox(model: nn.Module) -> Callable[..., Params]:
    """``prox(start, anchor, x, y, lr, lam, decay, steps)``: ME's inner solver, fused.

    ``steps`` iterations of ``theta <- theta - lr (grad f(theta; x, y) + lam (theta - anchor)
    + decay theta)`` from ``start`` on ONE batch (``methods.me.moreau_prox``), for C stacked
    clients of a fusable ``model`` (needs ``lam + decay > 0``). Written around the fixed point of
    the linear part, ``a = lam anchor / (lam + decay)``: with ``u = theta - a`` the iteration
    is ``u <- keep u - lr grad f(a + u)``, ``keep = 1 - lr (lam + decay)``, so each weight
    update is one ``baddbmm(u, dZ^T, A, beta=keep, alpha=-lr)`` (theta itself is only formed
    for the small later layers and at the end).

    The first layer never touches its wide weight inside the loop. Its gradient at iteration k
    is ``D_k^T X`` (``D_k`` = dZ_1, [B, H]) and the batch X is the same in every iteration, so
    ``u_k = keep^k u_0 + E_k^T X`` with ``E_{k+1} = keep E_k - lr D_k`` ([B, H]), and its
    pre-activation is ``X a^T + keep^k X u_0^T + G E_k + b`` with the Gram matrix
    ``G = X X^T`` ([B, B]). Per client and local step the first layer then costs two
    ``B x in x H`` products (``X a^T`` and the final ``E_K^T X``; a third, ``X u_0^T``, when
    theta does not start at the anchor) and ``G``, instead of two per iteration: for MNIST's
    784-100 layer, K = 5 and B = 20, 6.9 instead of 34.5 MFLOP (the same values up to float
    rounding: tests/test_fused.py against the generic loop).
    """
    layers = _plan(model)
    if layers is None:
        raise TypeError(f"fused steps need Flatten/Linear/activation layers, got {model}")
    body = [(name, layer) for name, layer in layers if not isinstance(layer, nn.Flatten)]
    first = body[0][0] if isinstance(body[0][1], nn.Linear) else None

    def prox(
        start: Params,
        anchor: Params,
        x: Tensor,
        y: Tensor,
        lr: float,
        lam: float,
        decay: float,
        steps: int,
    ) -> Params:
        keep = 1.0 - lr * (lam + decay)
        ratio = lam / (lam + decay)
        fixed = anchor if ratio == 1.0 else {k: ratio * a for k, a in anchor.items()}
        if start is anchor and ratio == 1.0:  # ME's local step: theta starts at the anchor
            u = {k: torch.zeros_like(v) for k, v in start.items()}
        else:
            u = {k: start[k] - fixed[k] for k in start}
        clients, batch = int(x.shape[0]), int(x.shape[1])
        data = x.reshape(clients, batch, -1)
        if first is not None:  # the first layer in the low-rank form above
            w1, b1 = f"{first}.weight", f"{first}.bias"
            fixed_out = torch.baddbmm(fixed[b1].unsqueeze(1), data, fixed[w1].transpose(1, 2))
            gram = torch.bmm(data, data.transpose(1, 2))
            start_w = u.pop(w1)
            zero_start = start is anchor and ratio == 1.0
            start_out = None if zero_start else torch.bmm(data, start_w.transpose(1, 2))
            coeff = data.new_zeros(clients, batch, int(start_w.shape[1]))  # E_k
            scale = 1.0  # keep^k
        for _ in range(int(steps)):
            hidden, saved = data, []
            for name, layer in body:
                weight = None
                if isinstance(layer, nn.Linear):
                    w, b = f"{name}.weight", f"{name}.bias"
                    if name == first:
                        offset = fixed_out + u[b].unsqueeze(1)
                        if start_out is not None:
                            offset = torch.add(offset, start_out, alpha=scale)
                        out = torch.baddbmm(offset, gram, coeff)
                    else:
                        weight = fixed[w] + u[w]
                        out = torch.baddbmm(
                            (fixed[b] + u[b]).unsqueeze(1), hidden, weight.transpose(1, 2)
                        )
                else:
                    out = layer(hidden)
                saved.append((name, layer, hidden, out, weight))
                hidden = out
            delta = _logits_grad(hidden, y)
            new: Params = {}
            for index in range(len(saved) - 1, -1, -1):
                name, layer, inp, out, weight = saved[index]
                if isinstance(layer, nn.Linear):
                    w, b = f"{name}.weight", f"{name}.bias"
                    if index > 0:
                        if weight is None:
                            weight = fixed[w] + u[w]
                        grad_in = torch.bmm(delta, weight)
                    else:
                        grad_in = None
                    if name == first:
                        coeff = torch.add(coeff * keep, delta, alpha=-lr)
                    else:
                        new[w] = torch.baddbmm(
                            u[w], delta.transpose(1, 2), inp, beta=keep, alpha=-lr
                        )
                    new[b] = torch.add(u[b] * keep, delta.sum(1), alpha=-lr)
                    delta = grad_in
                else:
                    delta = _BACKWARD[type(layer)](delta, inp, out)
            u = new
            if first is not None:
                scale *= keep
        if first is not None:  # u_K = keep^K u_0 + E_K^T X
            lift = coeff.transpose(1, 2)
            u[w1] = (
                torch.bmm(lift, data)
                if zero_start
                else torch.baddbmm(start_w, lift, data, beta=scale)
            )
        # u's tensors are this call's own: add in place (u + a == a + u exactly)
        return {k: u[k].add_(fixed[k]) for k in start}

    return prox
