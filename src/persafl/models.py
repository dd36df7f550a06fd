"""Models for the experiments, used functionally (parameters live outside the module).

The architectures follow the base papers' experiments: multinomial logistic regression (convex
case) and a one-hidden-layer MLP (784-100-10 on MNIST, 60-20-10 on Synthetic) as in pFedMe
(Dinh, Tran, Nguyen, NeurIPS 2020), and the two-conv "FedAvgCNN" (conv32-conv64-fc512) used by
pFedMe/PFLlib-style CIFAR-10 experiments, which Per-FedAvg (Fallah, Mokhtari, Ozdaglar, NeurIPS
2020) also names as a model class. There is no BatchNorm anywhere: running statistics are
buffers mutated in place, which a functional forward over stacked clients cannot express.

Training is functional (parameters are dicts of tensors), through one of two gradient
functions ``grad_fn(params, x, y) -> grads`` (same keys and shapes as ``params``):

- :func:`make_grad_fn`, the reference: ``torch.func.grad`` of the mean cross-entropy of the
  stateless module (``functional_call``) for ONE client, ``params`` as built by
  :func:`init_params`, ``x`` [B, *features];
- :func:`make_batched_grad_fn`: MANY clients at once, every parameter with a leading client
  dimension C (``[C, *shape]``, :func:`init_params` values stacked along dim 0) and ``x``
  [C, B, *features]. It runs :func:`make_batched_forward` (``bmm`` for linear layers, grouped
  convolution for conv layers) and ONE ``torch.autograd.grad`` of the sum over clients of each
  client's mean loss: the clients' losses share no parameter, so the gradient of the sum with
  respect to client c's slice is exactly client c's gradient. No ``vmap``: its per-call
  overhead (~1-2 ms per gradient on CPU) dwarfs a small model's arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

from persafl.engine import fused, fused_maml
from persafl.rng import torch_seed

Params = dict[str, Tensor]
LossFn = Callable[[Params, Tensor, Tensor], Tensor]
# grad_fn(params, x, y) -> gradient of the mean loss, same structure as params.
GradFn = Callable[[Params, Tensor, Tensor], Params]
# forward(params [C, ...], x [C, B, *features]) -> logits [C, B, classes].
BatchedForward = Callable[[Params, Tensor], Tensor]

MODEL_NAMES = ("logistic", "mlp", "cnn")


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,  # the base papers' choice (default)
    # Smooth alternatives: ReLU's kinks make the Hessian-free finite difference of
    # persafl_maml_hf jump whenever a unit changes sign, so smooth nets let HF be compared
    # with the exact MAML gradient (Per-FedAvg's analysis assumes smooth losses).
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
}


def _flat_dim(input_shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in input_shape))


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _logistic(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(input_shape), num_classes))


def _mlp(
    input_shape: Sequence[int], num_classes: int, hidden: int = 100, activation: str = "relu"
) -> nn.Module:
    # hidden=100 is pFedMe's MNIST MLP; their Synthetic runs use hidden=20 (set in config).
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(_flat_dim(input_shape), int(hidden)),
        _activation(activation),
        nn.Linear(int(hidden), num_classes),
    )


def _cnn(
    input_shape: Sequence[int], num_classes: int, fc_hidden: int = 512, activation: str = "relu"
) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(
            f"model 'cnn' needs an image input shape (channels, height, width), got {input_shape}"
        )
    channels, height, width = (int(s) for s in input_shape)

    def after_block(size: int) -> int:
        # conv 5x5 without padding removes 4 pixels, then max-pool 2 halves (floor).
        return (size - 4) // 2

    out_h, out_w = after_block(after_block(height)), after_block(after_block(width))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"model 'cnn' needs images of at least 16x16, got {height}x{width}")
    return nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=5),
        _activation(activation),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5),
        _activation(activation),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * out_h * out_w, int(fc_hidden)),
        _activation(activation),
        nn.Linear(int(fc_hidden), num_classes),
    )


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "logistic": _logistic,
    "mlp": _mlp,
    "cnn": _cnn,
}


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, **params: int | str
) -> nn.Module:
    """Build model ``name`` for inputs of shape ``input_shape`` (without the batch dimension).

    ``params``: ``hidden`` for ``mlp`` (default 100), ``fc_hidden`` for ``cnn`` (default 512),
    ``activation`` for both (``relu`` default, ``softplus``, ``tanh``).
    The module's own parameters hold the seed-0 initialization of :func:`init_params`, so that
    reading them directly is deterministic too; runs should call ``init_params(model, seed)``.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    # Construction runs torch's default init on the global RNG; fork it so building a model
    # never perturbs global state (we overwrite the values right after).
    with torch.random.fork_rng(devices=[]):
        try:
            model = _BUILDERS[name](tuple(input_shape), int(num_classes), **params)
        except TypeError as err:
            raise ValueError(f"bad parameters {params} for model {name!r}: {err}") from err
    with torch.no_grad():
        for key, value in init_params(model, 0).items():
            model.get_parameter(key).copy_(value)
    return model


def init_params(
    model: nn.Module,
    seed: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Params:
    """Fresh parameters for ``model``, a pure function of ``seed`` (purpose ``"init"``).

    Same distribution as torch's default Linear/Conv init (kaiming-uniform with a=sqrt(5),
    i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases alike), drawn from a
    dedicated torch.Generator on the CPU so the values do not depend on the device.
    """
    generator = torch.Generator().manual_seed(torch_seed(seed, "init"))
    params: Params = {}
    modules = dict(model.named_modules())
    for key, param in model.named_parameters():
        owner = modules[key.rpartition(".")[0]]
        weight = owner.get_parameter("weight")
        # fan_in of the owning layer: in_features for Linear, in_ch * kh * kw for Conv.
        fan_in = int(math.prod(weight.shape[1:]))
        bound = 1.0 / math.sqrt(fan_in)
        values = torch.rand(param.shape, generator=generator, dtype=torch.float64)
        values = (2.0 * values - 1.0) * bound
        params[key] = values.to(device=device, dtype=dtype or param.dtype)
    return params


def make_loss_fn(model: nn.Module) -> LossFn:
    """``loss_fn(params, x, y)``: mean cross-entropy of the stateless ``model`` with ``params``.

    Pure in ``params`` (no module state is read or written), so ``torch.func.grad`` and
    ``vmap`` apply to it.
    """

    def loss_fn(params: Params, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return loss_fn


def make_grad_fn(model: nn.Module) -> GradFn:
    """The reference gradient for one client: ``torch.func.grad`` of :func:`make_loss_fn`.

    It carries an ``hvp(params, vector, x, y)`` attribute: the exact (autograd) Hessian-vector
    product, forward-over-reverse (``torch.func.jvp`` of the gradient).
    """
    grad = torch.func.grad(make_loss_fn(model))

    def hvp(params: Params, vector: Params, x: Tensor, y: Tensor) -> Params:
        return torch.func.jvp(lambda p: grad(p, x, y), (params,), (vector,))[1]

    grad.hvp = hvp  # type: ignore[attr-defined]
    return grad


def make_autograd_grad_fn(model: nn.Module) -> GradFn:
    """:func:`make_grad_fn`'s gradient through ``torch.autograd.grad``: the same backward
    kernels, the same bits (tests/test_models.py), and it does not compose with ``torch.func``
    transforms. For code outside them: the first ``torch.func.grad`` call of a process imports
    ``torch._dynamo``, about 1 s, which the per-client baselines at the end of every training
    process paid for a handful of SGD steps (benchmarks/README.md "bench_process.py")."""
    loss_fn = make_loss_fn(model)

    def grad(params: Params, x: Tensor, y: Tensor) -> Params:
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            loss = loss_fn(leaves, x, y)
        return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))

    return grad


# Layers without parameters that act elementwise or per channel (so on any channel layout).
_STATELESS = (nn.ReLU, nn.Softplus, nn.Tanh, nn.MaxPool2d)


def make_batched_forward(model: nn.Module) -> BatchedForward:
    """``forward(params, x)``: logits [C, B, classes] of C clients' models on x [C, B, *feat].

    Interprets the model's ``nn.Sequential`` layers with a client dimension: a linear layer is
    ``baddbmm`` of the [C, B, in] activations with the [C, out, in] weights; a conv layer is one
    grouped convolution (groups = C) on activations laid out [B, C * channels, H, W], so that
    client c's channels form group c; max-pooling and activations act per channel anyway.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"batched forward needs an nn.Sequential model, got {type(model)}")
    layers = list(model.named_children())
    for name, layer in layers:
        if not isinstance(layer, (nn.Flatten, nn.Linear, nn.Conv2d, *_STATELESS)):
            raise TypeError(f"batched forward: unsupported layer {name}: {layer}")

    def forward(params: Params, x: Tensor) -> Tensor:
        clients, batch = int(x.shape[0]), int(x.shape[1])
        hidden, images = x, False  # layout: [C, B, ...] or images [B, C * channels, H, W]
        for name, layer in layers:
            if isinstance(layer, nn.Linear):
                weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
                hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
            elif isinstance(layer, nn.Conv2d):
                if not images:
                    hidden = hidden.transpose(0, 1).reshape(batch, -1, *hidden.shape[-2:])
                    images = True
                weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
                hidden = F.conv2d(
                    hidden,
                    weight.reshape(-1, *weight.shape[2:]),
                    bias.reshape(-1),
                    stride=layer.stride,
                    padding=layer.padding,
                    dilation=layer.dilation,
                    groups=clients,
                )
            elif isinstance(layer, nn.Flatten):
                if images:  # [B, C * ch, H, W] -> [C, B, ch * H * W] (the per-client order)
                    hidden = hidden.reshape(batch, clients, -1).transpose(0, 1)
                    images = False
                else:
                    hidden = hidden.reshape(clients, batch, -1)
            else:
                hidden = layer(hidden)
        if images:
            raise ValueError("batched forward: the model must end with flat (linear) outputs")
        return hidden

    return forward


def make_batched_grad_fn(model: nn.Module, fuse: bool = True) -> GradFn:
    """Per-client gradients of C clients at once (params [C, ...], x [C, B, ...], y [C, B]).

    One ``torch.autograd.grad`` of ``sum_c mean_b loss(c, b)``: exactly each client's gradient
    of its own mean loss, because client c's loss depends only on client c's parameters.
    With ``fuse`` and a fully connected model, the function also carries a ``descend``
    attribute (:func:`persafl.engine.fused.make_descend`: ``base - lr * grad`` in one pass, no
    gradient tensor) that :func:`persafl.methods.base.descend` uses for SGD-type steps, and a
    ``prox`` attribute (:func:`persafl.engine.fused.make_prox`, ME's inner solver) and, where the
    first layer after Flatten is a Linear, a ``maml`` attribute
    (:func:`persafl.engine.fused_maml.make_maml`, one MAML step). Always: an
    ``hvp(params, vector, x, y)`` attribute, the exact per-client Hessian-vector product
    (client c's block of the block-diagonal Hessian of the summed loss), and ``hvp_at(params,
    x, y)``, which returns that product as a function of the vector alone, its graph built once.
    """
    forward = make_batched_forward(model)

    def grad_fn(params: Params, x: Tensor, y: Tensor) -> Params:
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            logits = forward(leaves, x)
            total = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
            grads = torch.autograd.grad(total / int(y.shape[1]), list(leaves.values()))
        return dict(zip(leaves, grads, strict=True))

    def hvp_at(params: Params, x: Tensor, y: Tensor) -> Callable[[Params], Params]:
        """Per-client exact Hessian-vector products at one point: ``product(vector)``, double
        backward of the same loss. The forward pass and the gradient's graph are built once
        and kept for every vector (a power iteration's products: the same numbers as building
        them anew each time, at a fraction of the cost)."""
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            logits = forward(leaves, x)
            total = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
            grads = torch.autograd.grad(
                total / int(y.shape[1]), list(leaves.values()), create_graph=True
            )

        def product(vector: Params) -> Params:
            with torch.enable_grad():
                dot = sum((g * vector[k]).sum() for k, g in zip(leaves, grads, strict=True))
                products = torch.autograd.grad(
                    dot, list(leaves.values()), allow_unused=True, retain_graph=True
                )
            # contiguous: autograd may hand back transposed layouts, which every flatten of a
            # power iteration's norms and dots would copy again (the same values either way)
            return {
                k: torch.zeros_like(v) if h is None else h.detach().contiguous()
                for (k, v), h in zip(leaves.items(), products, strict=True)
            }

        return product

    def hvp(params: Params, vector: Params, x: Tensor, y: Tensor) -> Params:
        """Per-client exact Hessian-vector products (double backward of the same loss)."""
        return hvp_at(params, x, y)(vector)

    grad_fn.hvp = hvp  # type: ignore[attr-defined]
    grad_fn.hvp_at = hvp_at  # type: ignore[attr-defined]
    if fuse and fused.supports(model):
        grad_fn.descend = fused.make_descend(model)  # type: ignore[attr-defined]
        grad_fn.prox = fused.make_prox(model)  # type: ignore[attr-defined]
        if fused_maml.supports(model):
            grad_fn.maml = fused_maml.make_maml(model)  # type: ignore[attr-defined]
    return grad_fn


def activations_per_sample(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Scalars of all layer outputs for one sample (what a backward pass keeps alive)."""
    weight = next(model.parameters())
    total, hidden = 0, torch.zeros(1, *input_shape, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        for layer in model:
            hidden = layer(hidden)
            total += int(hidden[0].numel())
    return total


def predict(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """Logits of ``model`` with ``params`` on ``x`` ([B, *features] -> [B, classes])."""
    return functional_call(model, params, (x,))


def accuracy(model: nn.Module, params: Params, x: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct argmax predictions, a 0-d tensor (vmap-safe: no ``.item()``)."""
    logits = predict(model, params, x)
    return (logits.argmax(dim=-1) == y).to(logits.dtype).mean()


def loss_and_accuracy(
    model: nn.Module, params: Params, x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy from one forward pass (both 0-d tensors, vmap-safe)."""
    logits = predict(model, params, x)
    correct = (logits.argmax(dim=-1) == y).to(logits.dtype).mean()
    return F.cross_entropy(logits, y), correct


def num_parameters(params: Params) -> int:
    """Total number of scalars in a parameter dict."""
    return sum(int(v.numel()) for v in params.values())
