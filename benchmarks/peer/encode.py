"""Builds and reads KServe-V2 protobufs with MLServer's own generated classes, in the MLServer venv.

Sift's venv has protobuf 7 and no MLServer protos, so benchmarks.peer runs this script instead of importing
them, with the checkout on PYTHONPATH. Messages are exchanged as benchmarks.peer's length-prefixed frames.

  encode --model NAME --queries queries.json --output requests.bin   one ModelInferRequest per query
  decode --responses responses.bin --output decoded.json              ModelInferResponses -> JSON
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlserver.grpc import dataplane_pb2 as pb

from benchmarks.peer import read_frames, write_frames


def infer_request(model: str, query: str) -> bytes:
    """Input "query", BYTES, shape [1]: one query per request, as Sift's ClassifyIntent takes it."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="query",
        datatype="BYTES",
        shape=[1],
        contents=pb.InferTensorContents(bytes_contents=[query.encode()]),
    )
    return pb.ModelInferRequest(model_name=model, inputs=[tensor]).SerializeToString()


def decode_response(data: bytes) -> dict[str, list[str] | list[float]]:
    response = pb.ModelInferResponse.FromString(data)
    if response.raw_output_contents:
        raise ValueError("raw_output_contents are not expected: requests carry no raw_input_contents")
    out: dict[str, list[str] | list[float]] = {}
    for tensor in response.outputs:
        if tensor.datatype == "BYTES":
            out[tensor.name] = [b.decode() for b in tensor.contents.bytes_contents]
        else:
            out[tensor.name] = list(tensor.contents.fp32_contents)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    encode = commands.add_parser("encode")
    encode.add_argument("--model", required=True)
    encode.add_argument("--queries", type=Path, required=True, help="JSON list of query strings")
    encode.add_argument("--output", type=Path, required=True)
    decode = commands.add_parser("decode")
    decode.add_argument("--responses", type=Path, required=True)
    decode.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "encode":
        queries = json.loads(args.queries.read_text())
        write_frames(args.output, [infer_request(args.model, query) for query in queries])
    else:
        decoded = [decode_response(r) for r in read_frames(args.responses)]
        args.output.write_text(json.dumps(decoded))


if __name__ == "__main__":
    main()
