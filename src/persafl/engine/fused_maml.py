"""One MAML local step (FO or Hessian-free) for stacked fully connected models, fused.

``methods.maml.maml_step`` writes a step as two (FO) or four (HF) fused descents
(:func:`persafl.engine.fused.make_descend`), each a forward and a weight update at a point it
first builds in full: the adapted ``temp``, the step ``first`` and the finite-difference points
``params +- d g``. On the MNIST MLP (784-100-10) almost all the work is in the first layer, and
every point the step visits differs from ``params`` there by a low-rank term: with batches
``X_i`` [B, in] and the first layer's output gradients ``D_i`` [B, H] (dZ_1 of
:mod:`persafl.engine.fused`), per client

    W_temp = W - alpha D_0^T X_0                  (inner step, batch 0)
    g_W    = D_1^T X_1                            (outer gradient at temp, batch 1)
    W +- d g_W                                    (HF's finite-difference points, batch 2)
    W_new  = W - beta D_1^T X_1 + c (D_+ - D_-)^T X_2,   c = beta alpha / (2 d)

so their pre-activations are the products ``X_i W^T`` (once per batch, from ``params``) plus
small corrections through the batches' Gram blocks ``X_i X_j^T`` [B, B]:

    X_1 W_temp^T = X_1 W^T - alpha (X_1 X_0^T) D_0
    X_2 (W +- d g_W)^T = X_2 W^T +- d (X_2 X_1^T) D_1

Per client and step the first layer then costs 2 (FO) or 3 (HF) ``B x in x H`` products for the
forwards, one or two for the update (HF's ``(D_+ - D_-)^T X_2`` in one), and one or two
``B x B x in`` Grams, against 4 (FO) and 8 (HF) products and 3 (FO) or 6 (HF) full-size
parameter tensors written; the later, small layers are handled as in ``make_descend``. The same
values up to float rounding (tests/test_fused.py against ``maml_step`` through the plain
descents); the finite difference gets slightly more accurate, as ``+- d g_W`` is added to the
pre-activations instead of to ``W``'s entries, whose rounding is larger than ``d g_W``'s, and
``D_+ - D_-`` is taken before the product.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from persafl.engine.fused import _BACKWARD, _layer_forward, _layer_update, _logits_grad, _plan

Params = dict[str, Tensor]
# maml(params, xs [S, C, B, ...], ys [S, C, B], alpha, beta, delta, hessian_free) -> new params
MamlStep = Callable[[Params, Tensor, Tensor, float, float, float, bool, bool], Params]
# a Linear layer's output gradient dZ [C, B, out] and input [C, B, in] (None: the data)
Backprop = dict[str, tuple[Tensor, Tensor | None]]


def _body(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The fusable model's layers after its Flatten, if the first of them is a Linear."""
    layers = _plan(model)
    if layers is None:
        return None
    body = [(name, layer) for name, layer in layers if not isinstance(layer, nn.Flatten)]
    return body if isinstance(body[0][1], nn.Linear) else None


def supports(model: nn.Module) -> bool:
    """Whether :func:`make_maml` can fuse MAML steps of ``model``."""
    return _body(model) is not None


def make_maml(model: nn.Module) -> MamlStep:
    """``maml(params, xs, ys, alpha, beta, delta, hessian_free, inplace=False)`` for C stacked
    clients.

    ``params`` [C, ...]; ``xs`` [S, C, B, *features] and ``ys`` [S, C, B] with S >= 2 (FO) or
    3 (HF) batches. Returns ``methods.maml.maml_step``'s new parameters (alpha = personal_lr,
    beta = local_lr, delta = hf_delta) as new tensors; nothing is modified in place. With
    ``inplace`` (the caller owns ``params``) the first layer's new weight and bias are written
    into ``params``' tensors once nothing reads them any more: the same kernels and bits,
    without a fresh full-size tensor per step.
    """
    body = _body(model)
    if body is None:
        raise TypeError(f"fused MAML steps need Flatten, then Linear/activation layers: {model}")
    first, rest = body[0][0], body[1:]
    w1, b1 = f"{first}.weight", f"{first}.bias"

    def forward(params: Params, pre: Tensor) -> tuple[list, Tensor]:
        """Logits from the first layer's pre-activation ``pre``, saving what backward needs."""
        saved = [(first, body[0][1], None, pre)]
        hidden = pre
        for name, layer in rest:
            out = _layer_forward(name, layer, params, hidden)
            saved.append((name, layer, hidden, out))
            hidden = out
        return saved, hidden

    def backward(saved: list, logits: Tensor, y: Tensor, params: Params) -> Backprop:
        delta, grads = _logits_grad(logits, y), {}
        for index in range(len(saved) - 1, -1, -1):
            name, layer, inp, out = saved[index]
            if isinstance(layer, nn.Linear):
                grads[name] = (delta, inp)
                if index > 0:
                    delta = torch.bmm(delta, params[f"{name}.weight"])
            else:
                delta = _BACKWARD[type(layer)](delta, inp, out)
        return grads

    def update(new: Params, base: Params, grads: Backprop, lr: float) -> None:
        """``new[k] = base[k] - lr * grad_k`` for the layers after the first."""
        for name, (delta, inp) in grads.items():
            if name != first:
                w, b = f"{name}.weight", f"{name}.bias"
                new[w], new[b] = _layer_update(base[w], base[b], delta, inp, lr, False)

    def maml(
        params: Params,
        xs: Tensor,
        ys: Tensor,
        alpha: float,
        beta: float,
        delta: float,
        hessian_free: bool,
        inplace: bool = False,
    ) -> Params:
        clients, batch = int(ys.shape[1]), int(ys.shape[2])
        data = [xs[i].reshape(clients, batch, -1) for i in range(3 if hessian_free else 2)]
        weight, bias = params[w1], params[b1]
        proj = [torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2)) for x in data]
        # inner step at params on batch 0; temp's later layers in full, its first in low rank
        grads = backward(*forward(params, proj[0]), ys[0], params)
        d0 = grads[first][0]
        temp: Params = {}
        update(temp, params, grads, alpha)
        # outer gradient at temp on batch 1: X_1 W_temp^T + b_temp
        pre = torch.add(proj[1], d0.sum(1).unsqueeze(1), alpha=-alpha)
        pre = torch.baddbmm(pre, torch.bmm(data[1], data[0].transpose(1, 2)), d0, alpha=-alpha)
        grads = backward(*forward(temp, pre), ys[1], temp)
        d1 = grads[first][0]
        new: Params = {}
        update(new, params, grads, beta)
        # the first layer of params is not read after this point (HF's points params +- d g
        # differ from params in the later layers only; their first layer is ``shift`` below)
        new[w1], new[b1] = _layer_update(weight, bias, d1, data[1], beta, inplace)
        if hessian_free:
            # params +- d g, g the outer gradient (its first layer only as pre-activations)
            g = {}
            for name, (dz, inp) in grads.items():
                if name != first:
                    g[f"{name}.weight"] = torch.bmm(dz.transpose(1, 2), inp)
                    g[f"{name}.bias"] = dz.sum(1)
            shift = torch.bmm(torch.bmm(data[2], data[1].transpose(1, 2)), d1)
            shift.add_(d1.sum(1).unsqueeze(1))  # X_2 g_W^T + g_b
            scale = beta * alpha / (2.0 * delta)
            first_dz = []
            for sign in (1.0, -1.0):  # new + c grad f(params + d g) - c grad f(params - d g)
                at = {k: torch.add(params[k], v, alpha=sign * delta) for k, v in g.items()}
                pre = torch.add(proj[2], shift, alpha=sign * delta)
                grads = backward(*forward(at, pre), ys[2], at)
                update(new, dict(new), grads, -sign * scale)
                first_dz.append(grads[first][0])
            dz = first_dz[0].sub_(first_dz[1])  # D_+ - D_-: one product for the wide layer
            new[b1] = torch.add(new[b1], dz.sum(1), alpha=scale)
            new[w1].baddbmm_(dz.transpose(1, 2), data[2], alpha=scale)
        return {k: new[k] for k in params}

    return maml
