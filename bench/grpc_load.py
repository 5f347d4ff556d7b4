"""The benchmark's gRPC client: a closed loop of `concurrency` calls in flight for `duration`
seconds, each checked for the right label, spread over several connections (as several clients
would be, so the kernel spreads them over the workers). Python asyncio (grpc.aio), in a process
of its own; it prints one JSON line, including the CPU time the client itself spent per call,
which on a 2-core machine is taken from the server.

    python -m bench.grpc_load --port 8500 --kind "kserve bytes" --payload "28x28 PNG" -c 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import struct
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from app.rpc.protos import kserve_pb2, predict_pb2, types_pb2
from bench.payloads import Payload, load_payloads

# How each kind of call is sent: the method, and the request for a payload's image.
KINDS = {
    "kserve bytes": "ModelInfer, the image as a BYTES tensor (raw), top class",
    "tfserving string": "Predict, the image as a DT_STRING tensor",
}
MAX_CHANNELS = 16


def _call(kind: str, payload: Payload) -> tuple[str, bytes, Callable[[bytes], int]]:
    """(method path, serialized request, the label index read from a serialized response)."""
    if kind == "kserve bytes":
        request = kserve_pb2.ModelInferRequest(model_name="mnist")
        request.inputs.add(name="image", datatype="BYTES", shape=[1])
        top = request.outputs.add(name="output_0")
        top.parameters["classification"].int64_param = 1
        request.raw_input_contents.append(struct.pack("<I", len(payload.image)) + payload.image)

        def kserve_label(data: bytes) -> int:
            raw = kserve_pb2.ModelInferResponse.FromString(data).raw_output_contents[0]
            return int(raw[4:].decode().split(":")[1])

        return (
            "/inference.GRPCInferenceService/ModelInfer",
            request.SerializeToString(),
            (kserve_label),
        )
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "mnist"
    tensor = predict.inputs["image"]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=1)
    tensor.string_val.append(payload.image)

    def tfserving_label(data: bytes) -> int:
        output = predict_pb2.PredictResponse.FromString(data).outputs["output_0"]
        return int(np.frombuffer(output.tensor_content, dtype="<f4").argmax())

    return (
        "/tensorflow.serving.PredictionService/Predict",
        predict.SerializeToString(),
        (tfserving_label),
    )


async def run(
    address: str, kind: str, payload: Payload, concurrency: int, duration_s: float
) -> dict[str, Any]:
    method, body, label_of = _call(kind, payload)
    expected = int(payload.label)
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(address, options=options)
        for _ in range(min(concurrency, MAX_CHANNELS))
    ]
    calls = [channel.unary_unary(method) for channel in channels]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    wrong = 0
    stop_at = 0.0

    async def client(number: int) -> None:
        nonlocal wrong
        call = calls[number % len(calls)]
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                answer = await call(body, timeout=30)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1
                continue
            latencies.append(time.perf_counter() - began)
            wrong += label_of(answer) != expected

    try:
        for channel in channels:
            await channel.channel_ready()
        cpu_before = _cpu_s()
        began = time.perf_counter()
        stop_at = began + duration_s
        await asyncio.gather(*(client(number) for number in range(concurrency)))
        elapsed = time.perf_counter() - began
        cpu_s = _cpu_s() - cpu_before
    finally:
        for channel in channels:
            await channel.close()
    ordered = sorted(latencies) or [0.0]
    answered = len(latencies)
    return {
        "requests_per_s": answered / elapsed,
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "errors": sum(errors.values()),
        "error_codes": errors,
        "checked": answered,
        "wrong_labels": wrong,
        "client_cpu_ms_per_call": 1000 * cpu_s / max(answered, 1),
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--payload", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=6)
    args = parser.parse_args()
    payload = next(each for each in load_payloads() if each.name == args.payload)
    figures = asyncio.run(
        run(f"127.0.0.1:{args.port}", args.kind, payload, args.concurrency, args.duration)
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
