"""Scale-out of the teachers' bulk work on Ray: labelling the big unlabelled distillation set with soft
labels (the massive-unlabelled-data step of BERT2DNN) and embedding the catalogue's products for the
two-tower index.

`LabelEngine("local")` runs the single-process functions (`classifier_logits`, `SentenceTeacher.encode`)
in this process, exactly as before. `LabelEngine("ray")` runs the *same* functions over Ray Data: the texts
are sorted by length and cut into the batches the local path makes (so padding, and so every number, is
the same), and `map_batches` sends them to a fixed pool of actors, each loading its teacher once from
site-packages (no hub access) with one torch thread, so N actors use N CPUs. A fine-tuned teacher's
weights travel once through the object store. Each row carries its index, and the answers are put back in
input order.

The engine starts a local Ray instance with `cpus` CPUs, or joins a cluster given by `address` (or the
RAY_ADDRESS environment variable). Ray is imported only here and only on the Ray path: the default
training run does not need it, and the server never imports this module.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from training.finetune import EncoderClassifier, classifier_logits, load_encoder
from training.teachers import SentenceTeacher, length_batches, teacher_dir

log = logging.getLogger("sift.train.scale")

BATCH_SIZE = 256
"""Texts per teacher forward pass: the default of the local functions, so Ray's batches are theirs."""

ACTOR_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
"""Every Ray worker's environment: teachers load from site-packages only, one thread each."""


@dataclass
class LabelEngine:
    """Where the teachers' bulk labelling and embedding run: `local` (this process) or `ray`."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    """Ray cluster address (`host:6379`, `ray://host:10001`, `auto`); None = RAY_ADDRESS, else a local
    instance."""
    cpus: int | None = None
    """Teacher actors (one CPU and one torch thread each); for a local instance also its CPUs. None =
    every CPU of this machine (local) or of the cluster."""
    batch_size: int = BATCH_SIZE
    last_run: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    """Figures of the last Ray call: texts, actors, seconds, seconds to the first answered batch."""
    _started: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise ValueError(f"label engine {self.kind!r}: expected local or ray")
        if self.kind == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError("--label-engine ray needs Ray in this environment: pip install 'ray[data]'")

    # -- the two bulk operations -------------------------------------------------------------------

    def classifier_logits(
        self, teacher: str, model: EncoderClassifier, tokenizer: Any, texts: Sequence[str]
    ) -> np.ndarray:
        """Logits of a (fine-tuned) classifier teacher over `texts`, in their order: the soft labels the
        student distils. `teacher` is its base model's short name (minilm, mpnet)."""
        if self.kind == "local" or not texts:
            return classifier_logits(model, tokenizer, texts, batch_size=self.batch_size)
        import ray

        self._ensure_ray()
        spec = {
            "teacher": teacher,
            "num_classes": int(model.head.shape[0]),
            "num_layers": len(model.encoder.encoder.layer),
            "scale": float(model.scale),
            # Inside a list, so the actor receives the reference and fetches the weights itself.
            "state": [ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()})],
        }
        width = spec["num_classes"]
        return self._run(_ClassifierActor, spec, texts, width, f"{teacher}: soft labels")

    def encode(
        self,
        teacher: str,
        texts: Sequence[str],
        *,
        local: SentenceTeacher | None = None,
        max_length: int = 48,
        desc: str = "teacher encode",
    ) -> np.ndarray:
        """Unit sentence embeddings of `texts` by a pretrained teacher (minilm, mpnet), in their order.
        `local` is an already loaded teacher for the local path."""
        if self.kind == "local" or not texts:
            encoder = local or SentenceTeacher(teacher_dir(teacher), max_length=max_length)
            return encoder.encode(list(texts), batch_size=self.batch_size, desc=desc)
        self._ensure_ray()
        if local is not None:
            max_length = local.max_length
        dim = local.dim if local is not None else None
        spec = {"teacher": teacher, "max_length": max_length}
        return self._run(_EncoderActor, spec, texts, dim, f"{teacher}: {desc}")

    # -- Ray -----------------------------------------------------------------------------------------

    def _ensure_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS")
        runtime_env = {"env_vars": dict(ACTOR_ENV)}
        if address and address != "local":
            ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
            log.info("ray: joined %s (%s CPUs)", address, ray.cluster_resources().get("CPU"))
        else:
            ray.init(
                num_cpus=self.cpus or os.cpu_count(),
                include_dashboard=False,
                runtime_env=runtime_env,
                logging_level=logging.WARNING,
            )
            log.info("ray: started a local instance with %s CPUs", ray.cluster_resources().get("CPU"))
        self._started = True

    def actors(self) -> int:
        import ray

        if self.cpus:
            return self.cpus
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        """Shuts down the Ray instance this engine started (not one it found running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def _run(
        self, actor: type, spec: dict[str, Any], texts: Sequence[str], width: int | None, desc: str
    ) -> np.ndarray:
        import pyarrow as pa
        import ray.data

        # Rows carry their index, so Ray may answer in any order (no preserve_order needed).
        ray.data.DataContext.get_current().enable_progress_bars = False
        # The local functions' batches; one Arrow block per batch keeps Ray's batches on their boundaries.
        blocks = [
            pa.table(
                {"row": pa.array(idx, pa.int64()), "text": pa.array([texts[i] for i in idx], pa.string())}
            )
            for idx in length_batches([len(t) for t in texts], self.batch_size)
        ]
        n_actors = min(self.actors(), len(blocks))
        start = time.perf_counter()
        ds = ray.data.from_arrow(blocks).map_batches(
            actor,
            fn_constructor_kwargs={"spec": spec},
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=1,
            udf_modifying_row_count=False,
        )
        out: np.ndarray | None = None
        first = 0.0
        seen = np.zeros(len(texts), dtype=bool)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            values = np.asarray(batch["out"], dtype=np.float32)
            if out is None:
                first = time.perf_counter() - start
                out = np.empty((len(texts), width or values.shape[1]), dtype=np.float32)
            out[batch["row"]] = values
            seen[batch["row"]] = True
        if out is None or not seen.all():
            raise RuntimeError(f"ray {desc}: {int((~seen).sum())} of {len(texts)} texts came back unlabelled")
        seconds = time.perf_counter() - start
        self.last_run = {
            "texts": len(texts),
            "actors": n_actors,
            "seconds": seconds,
            "first_batch_seconds": first,
        }
        log.info(
            "ray %s: %d texts on %d actors in %.1f s (%.0f texts/s)",
            desc,
            len(texts),
            n_actors,
            seconds,
            len(texts) / seconds,
        )
        return out


def _fetch(ref_list: list[Any]) -> Any:
    import ray

    ref = ref_list[0]
    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


class _ClassifierActor:
    """One fine-tuned classifier teacher per actor: the base model from site-packages, then the
    fine-tuned weights from the object store."""

    def __init__(self, spec: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.tokenizer, encoder = load_encoder(teacher_dir(spec["teacher"]), spec["num_layers"])
        self.model = EncoderClassifier(encoder, spec["num_classes"], scale=spec["scale"])
        self.model.load_state_dict(_fetch(spec["state"]))
        self.model.eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        logits = classifier_logits(self.model, self.tokenizer, texts, batch_size=len(texts))
        return {"row": batch["row"], "out": logits}


class _EncoderActor:
    """One pretrained sentence teacher per actor, loaded from site-packages."""

    def __init__(self, spec: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.teacher = SentenceTeacher(teacher_dir(spec["teacher"]), max_length=spec["max_length"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"row": batch["row"], "out": self.teacher.encode(texts, batch_size=len(texts))}
