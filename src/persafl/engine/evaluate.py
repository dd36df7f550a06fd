"""Evaluation of a run's models on every client's TEST split.

Per client (docs/design.md "Executor and evaluation"):

- global accuracy / loss: the server model on the client's test data (NaN for ``local``, which
  has no server model);
- personalized accuracy: ``method.personalize(server model, A training batches)`` with
  ``A = eval_adapt_steps`` batches of ``batch_size`` drawn by ``rng.generator(seed, "eval",
  update, client)`` from the client's TRAIN data only (never its test data); for ``afl`` the
  personalized model is the global one, for ``local`` it is the client's own model.
  ``hp["adapt_on"] == "test"`` draws the adaptation batches from the client's TEST data
  instead: pFedMe's public Per-FedAvg evaluation, which leaks the test set into the model it
  tests; it exists only to compare with that code, is never the default, and a run that uses it
  says so in its log and in every aggregated table;
- ME's inner-solve diagnostics (:mod:`persafl.engine.diagnostics`): ``inner_residual_ca``
  (client-averaged ``||grad h(theta)|| / (lambda ||theta - x||)`` after the evaluation's inner
  steps) and ``inner_curvature_max`` (largest estimated Hessian eigenvalue of f over clients, on
  the first adaptation batch, at the server model); a warning is logged once per run when
  ``personal_lr`` exceeds the inner problem's stability limit ``2 / (L + lambda)``. NaN for
  methods without an inner problem;
- majority-class baseline: predict the client's most frequent TRAIN label (ties: the smallest
  label) on its test data.

Aggregates: ``_ca`` client-averaged (each client with test data counts once) and ``_sw``
sample-weighted (total correct / total test samples). Clients are evaluated in stacks of similar
test-set size (:mod:`persafl.engine.eval_stacks`: padded to the stack's longest and masked, at
most 1.25 padded samples per real one; the samples gathered once per partition,
:mod:`persafl.engine.test_sets`): the server model in plain forward passes over the stack's
real test samples, ``FORWARD_ROWS`` at a time; per-client models (personalized, ``local``) with
the batched forward and gradient of :mod:`persafl.models` over the padded stack, identical for
both execution backends.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from persafl.engine import diagnostics, test_sets
from persafl.engine.batches import eval_indices, gather
from persafl.methods import Method
from persafl.models import (
    Params,
    activations_per_sample,
    make_batched_forward,
    make_batched_grad_fn,
    predict,
)

# Rows per forward pass of the server model over a stack's real test samples: MNIST's 17,502
# test samples in pieces of 1,024 took 41 ms against 44 ms in one matrix product and 55 ms
# padded (one core; benchmarks/results/eval.md). A row's logits are the same bits either way.
FORWARD_ROWS = 1024

METRIC_COLUMNS = (
    "global_acc_ca",
    "global_acc_sw",
    "global_loss_ca",
    "personal_acc_ca",
    "personal_acc_sw",
    "majority_acc_ca",
    "majority_acc_sw",
    "inner_residual_ca",
    "inner_curvature_max",
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: aggregated metrics and per-client accuracies (arrays over clients)."""

    metrics: dict[str, float]
    global_acc: np.ndarray
    personal_acc: np.ndarray
    majority_acc: np.ndarray
    finite: bool  # False if a loss was NaN/inf: the run has diverged


def _aggregate(per_client: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """(client-averaged, sample-weighted) mean of a per-client accuracy."""
    has_test = counts > 0
    if not has_test.any() or np.isnan(per_client[has_test]).all():
        return float("nan"), float("nan")
    ca = float(per_client[has_test].mean())
    sw = float((per_client[has_test] * counts[has_test]).sum() / counts[has_test].sum())
    return ca, sw


class Evaluator:
    """Evaluates server / per-client models; test indices and baselines are prepared once."""

    def __init__(
        self,
        model: nn.Module,
        method: Method,
        hp: Mapping,
        x: Tensor,
        y: Tensor,
        train: list[np.ndarray],
        test: list[np.ndarray],
        seed: int,
        cache: MutableMapping | None = None,
    ) -> None:
        """``cache``: a dict shared by the runs of a group (:func:`test_sets.shared`: runs with
        the same test indices share their gathered test samples); None keeps them private."""
        self.model, self.method, self.hp = model, method, dict(hp)
        self.forward, self.grad_fn = make_batched_forward(model), make_batched_grad_fn(model)
        self.x, self.y, self.train, self.seed = x, y, train, seed
        self.adapt_on = str(self.hp.get("adapt_on", "train"))
        if self.adapt_on not in ("train", "test"):
            raise ValueError(f"adapt_on: got {self.adapt_on!r}, expected 'train' or 'test'")
        if self.adapt_on == "test" and method.personalized:
            log.warning(
                "adapt_on: test: personalization adapts on TEST batches (pFedMe's leaky "
                "Per-FedAvg evaluation, for comparison only); personal_acc is not a clean "
                "test accuracy"
            )
        # Where adaptation batches come from: TRAIN (default) or, leaky, TEST (a client without
        # test samples has no accuracy to report, so its train data stand in).
        self.adapt_source = (
            train
            if self.adapt_on == "train"
            else [te if len(te) else tr for tr, te in zip(train, test, strict=True)]
        )
        self.inner_warned = False
        # Last power-iteration vector per chunk of clients (start of the next, warm estimate)
        self.curvature_start: dict[int, Params] = {}
        self.num_clients = len(test)
        self.test_counts = np.array([len(t) for t in test], dtype=np.int64)
        features = int(np.prod(x.shape[1:]))
        per_sample = features + activations_per_sample(model, tuple(x.shape[1:]))
        self.tests = test_sets.shared(cache, x, y, test, per_sample)
        # Personalization (fixed-size adaptation batches, no padding) runs over contiguous
        # chunks of clients, sized as the test stacks were before size-sorting (so its
        # arithmetic, and the diagnostics' warm starts, are those of one chunk of all clients
        # where that fits).
        longest = max(1, int(self.test_counts.max(initial=0)))
        chunk = max(1, test_sets.CHUNK_ELEMENTS // (longest * per_sample))
        self.adapt_chunks = [
            (start, min(start + chunk, self.num_clients))
            for start in range(0, self.num_clients, chunk)
        ]
        self.majority_acc = self._majority(y.cpu().numpy(), train, test)

    @staticmethod
    def _majority(
        labels: np.ndarray, train: list[np.ndarray], test: list[np.ndarray]
    ) -> np.ndarray:
        acc = np.full(len(test), np.nan)
        for client, (tr, te) in enumerate(zip(train, test, strict=True)):
            if len(tr) and len(te):
                # argmax returns the first maximum: ties go to the smallest label.
                majority = int(np.bincount(labels[tr]).argmax())
                acc[client] = float((labels[te] == majority).mean())
        return acc

    def _client_stats(self, stack: int, logits: Tensor) -> Tensor:
        """Per-client (correct count, summed loss) [n, 2] for the n clients of ``stack`` from
        their padded logits [n, L, K]."""
        yt, mask = self.tests.labels[stack], self.tests.mask[stack].to(logits.dtype)
        correct = (logits.argmax(dim=-1) == yt).to(mask.dtype)
        losses = F.cross_entropy(logits.flatten(0, 1), yt.flatten(), reduction="none")
        # sums, not means: the division happens in float64 (exact counts, clean ratios)
        return torch.stack(
            [(correct * mask).sum(dim=1), (losses.view_as(mask) * mask).sum(dim=1)], dim=1
        )

    def _stats(self, params: Params, stacked: bool) -> np.ndarray:
        """Per-client (accuracy, loss) for all clients, in stacks of clients: per-client models
        with the batched forward over each padded stack; one model for all with plain forward
        passes over every stack's real samples, ``FORWARD_ROWS`` at a time."""
        tests, out = self.tests, []
        with torch.no_grad():
            if not stacked:
                logits = self._server_logits(params, tests.rows())
            for stack, ids in enumerate(tests.stack_ids):
                if stacked:
                    own = {k: v.index_select(0, ids) for k, v in params.items()}
                    padded = self.forward(own, tests.padded(stack))
                elif tests.source[stack] is None:  # a small stack: its own forward pass
                    xt = tests.padded(stack)
                    padded = predict(self.model, params, xt.flatten(0, 1)).unflatten(
                        0, xt.shape[:2]
                    )
                else:
                    padded = tests.spread(stack, logits)
                out.append(self._client_stats(stack, padded))
        return self._means(out)

    def _server_logits(self, params: Params, rows: Tensor) -> Tensor:
        """Logits of ``rows`` in near-equal pieces of at most ``FORWARD_ROWS`` (a piece never
        gets small: see ``test_sets.SMALL_ROWS``)."""
        if len(rows) <= FORWARD_ROWS:
            return predict(self.model, params, rows)
        pieces = torch.tensor_split(rows, -(-len(rows) // FORWARD_ROWS))
        return torch.cat([predict(self.model, params, piece) for piece in pieces])

    def _means(self, sums: list[Tensor]) -> np.ndarray:
        """(accuracy, mean loss) per client, in client order, from the stacks' (correct, loss
        sum); NaN if no test."""
        stats = torch.cat(sums).double().cpu().numpy()[self.tests.unstack]
        with np.errstate(invalid="ignore", divide="ignore"):
            return stats / self.test_counts[:, None]

    def _personalized(self, server: Params, update_index: int) -> np.ndarray:
        """Per-client (accuracy, loss, inner residual, curvature) of ``personalize(server,
        adaptation batches)`` (residual and curvature NaN without an inner problem)."""
        adapt, batch = int(self.hp["eval_adapt_steps"]), int(self.hp["batch_size"])
        personal, inner = [], []
        for start, stop in self.adapt_chunks:
            # [A, C, B]: adaptation batch a of every client in the chunk
            indices = np.stack(
                [
                    eval_indices(self.seed, update_index, c, self.adapt_source[c], adapt, batch)
                    for c in range(start, stop)
                ],
                axis=1,
            )
            xb, yb = gather(self.x, self.y, indices)
            stacked = {k: v.expand(stop - start, *v.shape).contiguous() for k, v in server.items()}
            personal.append(self.method.personalize(stacked, xb, yb, self.hp, self.grad_fn))
            inner.append(self._inner(start, stacked, personal[-1], xb, yb))
        every = {k: torch.cat([p[k] for p in personal]) for k in personal[0]}
        return np.concatenate([self._stats(every, stacked=True), np.concatenate(inner)], axis=1)

    def _inner(
        self, chunk: int, server: Params, theta: Params, xb: Tensor, yb: Tensor
    ) -> np.ndarray:
        """[C, 2]: inner residual (last batch) and top curvature (first batch), or NaN; the
        curvature's power iteration starts warm from the chunk's previous evaluation."""
        inner_gradient = self.method.inner_gradient
        if inner_gradient is None or int(xb.shape[0]) == 0:
            return np.full((int(xb.shape[1]), 2), np.nan)
        residual = diagnostics.inner_residual(
            theta, server, xb[-1], yb[-1], self.hp, inner_gradient, self.grad_fn
        )
        start = self.curvature_start.get(chunk)
        iterations = diagnostics.POWER_ITERATIONS if start is None else diagnostics.WARM_ITERATIONS
        curvature, self.curvature_start[chunk] = diagnostics.top_curvature(
            server, xb[0], yb[0], self.grad_fn, iterations, start
        )
        return torch.stack([residual, curvature], dim=1).double().cpu().numpy()

    def evaluate(
        self, update_index: int, server: Params | None, own: Params | None = None
    ) -> Evaluation:
        """Evaluate at ``update_index``: ``server`` params, or per-client ``own`` (local)."""
        nan = np.full(self.num_clients, np.nan)
        if server is not None:
            global_stats = self._stats(server, stacked=False)
            if self.method.personalized:
                personal_stats = self._personalized(server, update_index)
            else:
                personal_stats = np.concatenate(
                    [global_stats, np.full_like(global_stats, np.nan)], 1
                )
        else:
            if own is None:
                raise ValueError("evaluate needs server params or per-client params")
            global_stats = np.stack([nan, nan], axis=1)
            personal_stats = np.concatenate(
                [self._stats(own, stacked=True), np.stack([nan, nan], 1)], 1
            )
        finite = bool(
            np.isfinite(personal_stats[self.test_counts > 0, 1]).all()
            and (server is None or np.isfinite(global_stats[self.test_counts > 0, 1]).all())
        )
        metrics: dict[str, float] = {}
        metrics["global_acc_ca"], metrics["global_acc_sw"] = _aggregate(
            global_stats[:, 0], self.test_counts
        )
        metrics["global_loss_ca"] = _aggregate(global_stats[:, 1], self.test_counts)[0]
        metrics["personal_acc_ca"], metrics["personal_acc_sw"] = _aggregate(
            personal_stats[:, 0], self.test_counts
        )
        metrics["majority_acc_ca"], metrics["majority_acc_sw"] = _aggregate(
            self.majority_acc, self.test_counts
        )
        metrics.update(self._inner_metrics(update_index, personal_stats[:, 2:]))
        return Evaluation(
            metrics=metrics,
            global_acc=global_stats[:, 0],
            personal_acc=personal_stats[:, 0],
            majority_acc=self.majority_acc,
            finite=finite,
        )

    def _inner_metrics(self, update_index: int, inner: np.ndarray) -> dict[str, float]:
        """``inner_residual_ca`` and ``inner_curvature_max``; warn once on an unstable step."""
        residual, curvature = inner[:, 0], inner[:, 1]
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(residual)
            top = np.isfinite(curvature)
            metrics = {
                "inner_residual_ca": float(residual[finite].mean()) if finite.any() else np.nan,
                "inner_curvature_max": float(curvature[top].max()) if top.any() else np.nan,
            }
        if top.any() and not self.inner_warned:
            limit = diagnostics.stability_limit(metrics["inner_curvature_max"], self.hp)
            if float(self.hp["personal_lr"]) >= limit:
                self.inner_warned = True
                log.warning(
                    "update %d: personal_lr %.4g is above the inner problem's stability limit "
                    "2 / (L + lambda) = %.4g (estimated top Hessian eigenvalue L = %.4g over "
                    "clients): the K inner steps can expand instead of contracting; see the "
                    "inner_residual_ca column (warned once per run)",
                    update_index,
                    float(self.hp["personal_lr"]),
                    limit,
                    metrics["inner_curvature_max"],
                )
        return metrics
