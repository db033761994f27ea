"""MLServer custom runtime doing the work of Sift's ClassifyIntent, so the two servers can be compared.

Loaded by MLServer inside its own venv (.venv-mlserver) with the Sift checkout on PYTHONPATH; never
imported by Sift. Per request, as server/service/intent.py: check the query, featurize it with Sift's own
Featurizer, answer from the golden exact-query rule or else run intent.onnx (its graph ends in softmax),
and return the top-5 label ids (BYTES) with their probabilities (FP32), both shape [1, k].

server.bundle is not imported: it pulls in Sift's Prometheus metrics (which would register in MLServer's
registry), usearch and the service layer. The manifest is read and checked by server/manifest.py (standard
library only), and the intent session opened with Sift's own options (server/runtime/session.py); the other
modules used (featurize, rules, service.validation) need only numpy and tokenizers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from server.errors import InvalidArgument
from server.featurize import Featurizer, FeaturizerConfig
from server.manifest import Manifest
from server.rules import GRADES, parse_rules
from server.runtime.session import ThreadSettings, open_session
from server.service.validation import Limits, check_text

TOP_K = 5
INPUT = "query"


class SiftIntentRuntime(MLModel):
    """parameters.uri is the Sift bundle directory."""

    async def load(self) -> bool:
        parameters = self.settings.parameters
        if parameters is None or not parameters.uri:
            raise ValueError(f"{self.name}: parameters.uri must name a Sift bundle directory")
        bundle = Path(parameters.uri)
        manifest = Manifest.read(bundle)
        if manifest.components.intent is None:
            raise ValueError(f"{self.name}: {bundle} has no intent model")
        featurizer = manifest.featurizer
        self._featurizer = Featurizer(
            bundle / featurizer.tokenizer, FeaturizerConfig.from_json(featurizer.config)
        )
        labels = manifest.labels
        self._label_ids = [label.id.encode() for label in labels]
        rules = json.loads((bundle / manifest.components.rules.file).read_text(encoding="utf-8"))
        # The relevance rules name the bundle's grades: parse them against its set (four for ESCI data).
        relevance = manifest.components.relevance
        grades = tuple(relevance.grades or ()) if relevance is not None else GRADES
        self._exact_queries = parse_rules(rules, [label.path for label in labels], grades).intent_queries
        # One intra-op thread, as Sift serves by default.
        self._session = open_session(str(bundle / manifest.components.intent.file), ThreadSettings())
        self._output = self._session.get_outputs()[0].name
        self._max_chars = Limits().max_query_chars
        self._top_k = min(TOP_K, len(labels))
        # Warm up as Sift's Bundle.warm_up does, so the first request pays no lazy initialisation.
        self._session.run([self._output], {"ids": self._featurizer.batch_ids(["warm up query"])})
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # Run on the event loop, not in an executor: Sift's grpc.aio servicer does the same.
        query = self._query(payload)
        words = self._featurizer.words(query)
        rule_label = self._exact_queries.get(" ".join(words))
        if rule_label is not None:
            # Sift's golden rule answers with its one category, certain.
            order, probs = [rule_label], np.ones(len(self._label_ids), dtype=np.float32)
        else:
            ids = self._featurizer.ids_of_words([words])
            probs = self._session.run([self._output], {"ids": ids})[0][0]
            order = np.argsort(-probs, kind="stable")[: self._top_k].tolist()
        k = len(order)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                ResponseOutput(
                    name="label_ids", datatype="BYTES", shape=[1, k], data=[self._label_ids[i] for i in order]
                ),
                ResponseOutput(
                    name="probabilities", datatype="FP32", shape=[1, k], data=[float(probs[i]) for i in order]
                ),
            ],
        )

    def _query(self, payload: InferenceRequest) -> str:
        tensor = next((t for t in payload.inputs if t.name == INPUT), None)
        if tensor is None or tensor.datatype != "BYTES" or len(tensor.data) != 1:
            raise InferenceError(f'{self.name}: expects one input "{INPUT}", BYTES, shape [1]')
        value = tensor.data[0]  # the datatype is stored as its string value
        try:
            # gRPC bytes_contents arrive as bytes, REST JSON as str.
            text = value.decode() if isinstance(value, bytes) else str(value)
            return check_text(text, INPUT, self._max_chars)
        except (UnicodeDecodeError, InvalidArgument) as e:
            raise InferenceError(f"{self.name}: {e}") from e
