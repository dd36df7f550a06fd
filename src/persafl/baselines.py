"""Per-client baselines computed from a run's final server model (issue 14).

Beside every personalized number the regime study shows what cheaper recipes reach on the same
client (the others, local training and the majority class, come from their own runs and from
evaluation):

- ``masked_acc``: the label-masked global model: the server model's logits restricted to the
  labels the client holds in its TRAIN split (argmax over those labels only). It is what the
  global model gains from knowing the client's label set alone, which separates learning the
  label prior from personalization.
- ``finetune_acc``: FedAvg plus fine-tuning: the server model adapted by plain SGD on the
  client's TRAIN data with the personalized methods' evaluation budget: the same adaptation
  batches as the personalized evaluation (``eval_adapt_steps`` batches of ``batch_size``, drawn
  by :func:`persafl.engine.batches.eval_indices` at the final update), ``inner_steps`` steps of
  ``personal_lr`` on each (pFedMe's K inner steps; 1 and ``local_lr`` when the run's
  hyperparameters do not set them). For ``afl`` runs this is the FedAvg + FT baseline; the
  regime config gives ``afl`` ME's ``personal_lr`` and ``inner_steps`` so the budgets match.

Both are evaluated on the client's TEST split only. Pure functions over tensors (no file I/O).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from persafl.engine.batches import eval_indices
from persafl.methods.base import sgd_step
from persafl.models import Params, make_autograd_grad_fn, predict

__all__ = ["BASELINE_COLUMNS", "client_baselines", "finetune_budget", "masked_correct"]

BASELINE_COLUMNS = ("masked_acc", "finetune_acc")


def masked_correct(logits: Tensor, labels: Tensor, allowed: Tensor) -> Tensor:
    """Per-sample correctness of the argmax over the ``allowed`` classes only.

    ``logits`` [N, C], ``labels`` [N], ``allowed`` [C] bool (the client's train labels).
    Classes outside ``allowed`` get ``-inf``, so they are never predicted; ties go to the
    smallest class, as ``argmax`` does.
    """
    masked = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    return masked.argmax(dim=-1) == labels


def finetune_budget(hp: Mapping) -> tuple[int, int, float]:
    """(batches, SGD steps per batch, step size) of the fine-tuning baseline (module doc)."""
    batches = int(hp.get("eval_adapt_steps", 1))
    steps = int(hp.get("inner_steps", 1))
    lr = float(hp.get("personal_lr", hp["local_lr"]))
    return batches, steps, lr


def client_baselines(
    model: nn.Module,
    hp: Mapping,
    server: Params,
    x: Tensor,
    y: Tensor,
    train: list[np.ndarray],
    test: list[np.ndarray],
    num_classes: int,
    seed: int,
    update_index: int,
) -> dict[str, np.ndarray]:
    """``masked_acc`` and ``finetune_acc`` per client (NaN for a client without test data)."""
    grad_fn = make_autograd_grad_fn(model)
    batches, steps, lr = finetune_budget(hp)
    batch_size = int(hp["batch_size"])
    out = {name: np.full(len(test), np.nan) for name in BASELINE_COLUMNS}
    server = {k: v.detach().to(x.device) for k, v in server.items()}
    for client, (tr, te) in enumerate(zip(train, test, strict=True)):
        if len(te) == 0 or len(tr) == 0:
            continue
        index = torch.from_numpy(np.asarray(te, dtype=np.int64)).to(x.device)
        xt, yt = x[index], y[index]
        allowed = torch.bincount(y[torch.from_numpy(tr).to(x.device)], minlength=num_classes) > 0
        with torch.no_grad():
            logits = predict(model, server, xt)
        out["masked_acc"][client] = float(masked_correct(logits, yt, allowed).double().mean())
        tuned = dict(server)
        adapt = eval_indices(seed, update_index, client, tr, batches, batch_size)
        for row in adapt:
            index = torch.from_numpy(row).to(x.device)
            for _ in range(steps):
                tuned = sgd_step(tuned, grad_fn(tuned, x[index], y[index]), lr)
        with torch.no_grad():
            correct = predict(model, tuned, xt).argmax(dim=-1) == yt
        out["finetune_acc"][client] = float(correct.double().mean())
    return out
