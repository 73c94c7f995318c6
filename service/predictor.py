"""One served model version: preprocessed vectors -> batcher -> worker thread -> ranked answers.

The `Predictor` owns a `Batcher` and a single worker thread that runs, per batch, the
synchronous ONNX session and the card's probabilities (`spectra.scoring.combined_probabilities`:
temperature-scaled softmax, mixed with a softmax over the ranking search's scores of the whole
library where the card says so). Both are matrix products over the batch, so neither blocks the
event loop, and the library is read once per batch instead of once per request (at the batch
sizes a busy CPU server forms, about 0.9 ms per spectrum alone, 0.3 at 16). Per request, on the
loop: top-k, the shown similarity (the card's metric) of the hits returned only, and the
no-match rule (`spectra.scoring.is_match`).
Requests hold a lease while they use a predictor; a retired predictor (replaced by a reload or
activation) closes once its last lease is returned, so batches already queued on it finish on its
session.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.batcher import Batcher, BatcherClosed, Done, QueueFull
from service.errors import InferenceFailed, NotReady, Overloaded, Timeout
from service.metrics import Metrics
from service.model import LoadedModel
from service.traffic import Traffic
from spectra.preprocess import Prepared
from spectra.scoring import combined_probabilities, is_match, served_rule, softmax

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """Batching and timeout knobs (see `service.settings.Settings`)."""

    max_batch_size: int = 64
    max_wait_s: float = 0.002
    queue_size: int = 1024
    timeout_s: float = 10.0
    wait_when_idle: bool = False


@dataclass(frozen=True)
class Scored:
    """One spectrum's network output and the card's probabilities, both over the card's
    classes."""

    logits: np.ndarray
    probabilities: np.ndarray


def top_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """[n, k] class indices by descending probability (ties: lower index first)."""
    k = min(k, probs.shape[1])
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


class Predictor:
    """A loaded model version behind its own batcher and worker thread."""

    def __init__(
        self,
        model: LoadedModel,
        cfg: BatchingConfig,
        metrics: Metrics,
        traffic: Traffic | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.metrics = metrics
        self.traffic = traffic or Traffic()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"ort-{model.name}")
        self._batcher: Batcher[np.ndarray, Scored] = Batcher(
            self._process,
            max_batch_size=cfg.max_batch_size,
            max_wait_s=cfg.max_wait_s,
            queue_size=cfg.queue_size,
            observe=self._observe,
            expect_more=None if cfg.wait_when_idle else self.traffic.expect_more,
        )
        self._leases = 0
        self._retired = False
        self.closed = False

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def provider(self) -> str:
        return self.model.session.provider

    @property
    def depth(self) -> int:
        """Spectra queued on this predictor."""
        return self._batcher.depth

    async def score(self, vectors: np.ndarray) -> list[Done[Scored]]:
        """Logits and probabilities for `[n, L]` model-ready vectors, batched with other
        requests."""
        self.traffic.waiting += 1
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                return await self._batcher.submit(list(vectors))
        except QueueFull as exc:
            self.metrics.queue_rejected.labels(self.name).inc()
            raise Overloaded(f"model {self.name!r} is at capacity ({exc}); retry shortly") from None
        except TimeoutError:
            raise Timeout(
                f"no result within {self.cfg.timeout_s:g} s; the service is busy"
            ) from None
        except BatcherClosed:
            raise NotReady(f"model {self.name!r} version {self.version} was unloaded") from None
        except Exception as exc:
            log.exception("inference failed on %s/%s", self.name, self.version)
            raise InferenceFailed(f"inference failed: {type(exc).__name__}") from None
        finally:
            self.traffic.waiting -= 1

    async def identify(
        self, prepared: list[Prepared], top_k: int, include_spectrum: bool = False
    ) -> list[dict[str, Any]]:
        """Ranked answers for preprocessed spectra (the `/v1/identify` result body, less `id`);
        with `include_spectrum`, each answer also carries the model input it was computed from."""
        vectors = np.stack([p.values for p in prepared])
        done = await self.score(vectors)
        probs = np.stack([d.value.probabilities for d in done])
        top = top_indices(probs, top_k)
        # the HQI (shown, and thresholded by the rule) of the hits returned only: their rows
        sims = self.model.library.similarity.scores_of(vectors, top)
        answers = [
            self._answer(p, d, probs[i], top[i], sims[i])
            for i, (p, d) in enumerate(zip(prepared, done, strict=True))
        ]
        if include_spectrum:
            for p, a in zip(prepared, answers, strict=True):
                a["spectrum"] = {
                    "intensities": p.values.tolist(),
                    "measured_range": list(p.measured or (float("nan"), float("nan"))),
                }
        return answers

    def probabilities(self, vectors: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The card's [n, C] probabilities for model-ready vectors and their logits (run by the
        worker for each batch)."""
        calib = self.model.card.calibration
        if calib.library_weight == 0:  # no mix: the library is searched for the hits shown only
            return softmax(logits, calib.temperature)
        # one product with the whole library (rows x L): the ranking search's class scores
        ranking = self.model.library.ranking.class_scores(vectors, len(self.model.card.classes))
        return combined_probabilities(logits, ranking, calib)

    def _answer(
        self,
        prep: Prepared,
        done: Done[Scored],
        probs: np.ndarray,
        top: np.ndarray,
        sims: np.ndarray,
    ) -> dict[str, Any]:
        calib = self.model.card.calibration
        classes = self.model.card.classes
        match = is_match(probs[top[0]], sims[0], prep.coverage, calib)
        self.metrics.identifications.labels(self.name, "match" if match else "no_match").inc()
        predictions = [
            {
                "rank": r + 1,
                "label": classes[c],
                "probability": float(probs[c]),
                "similarity": float(sims[r]),
            }
            for r, c in enumerate(top.tolist())
        ]
        return {
            "match": match,
            "predictions": predictions,
            "warnings": list(prep.warnings),
            "coverage": prep.coverage,
            "no_match_rule": served_rule(calib),
            "timings": {
                "queue_ms": done.queued_s * 1e3,
                "inference_ms": done.run_s * 1e3,
                "batch_size": done.batch_size,
            },
        }

    async def _process(self, rows: list[np.ndarray]) -> list[Scored]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._infer, rows)

    def _infer(self, rows: list[np.ndarray]) -> list[Scored]:
        vectors = np.stack(rows)
        logits = self.model.session.run(vectors[:, None, :])
        # non-finite logits (finite input far outside [0, 1]) give NaN probabilities, which
        # /v2 refuses with a 400; /v1 input is min-max normalised and cannot get there
        with np.errstate(invalid="ignore", over="ignore"):
            probs = self.probabilities(vectors, logits)
        return [Scored(lg, pr) for lg, pr in zip(logits, probs, strict=True)]

    def _observe(self, size: int, seconds: float) -> None:
        self.metrics.observe_batch(self.name, size, seconds)

    # --- lifetime: leases keep a retired predictor alive until its last request is answered ---

    def acquire(self) -> None:
        """Count a request that is about to use this predictor."""
        self._leases += 1

    async def release(self) -> None:
        """Return a lease; closes a retired predictor when it was the last one."""
        self._leases -= 1
        if self._retired and self._leases == 0:
            await self.close()

    async def retire(self) -> None:
        """Stop serving new requests here; close once in-flight requests are answered."""
        self._retired = True
        if self._leases == 0:
            await self.close()

    async def close(self) -> None:
        """Stop the batcher and the worker thread."""
        if self.closed:
            return
        self.closed = True
        await self._batcher.close()
        self._executor.shutdown(wait=False)
        log.info("unloaded %s version %s", self.name, self.version)
