"""The gRPC server of one worker, on the service's event loop: TensorFlow Serving's and KServe
v2's services, the standard health service and server reflection.

Every worker binds the one gRPC port with SO_REUSEPORT (gRPC's default on Linux), so the kernel
spreads connections over the workers as it does the REST port's. Health follows readiness: the
services are SERVING once the model is warm, NOT_SERVING from SIGTERM on; at shutdown the server
stops taking calls and gives those in flight the shutdown timeout to finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from app.dependencies import Services
from app.rpc import kserve, tfserving
from app.rpc.calls import Calls
from app.rpc.protos import (
    kserve_grpc,
    kserve_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

SERVED = [
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    kserve_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
]


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@asynccontextmanager
async def grpc_serving(services: Services) -> AsyncIterator[int | None]:
    """Serves gRPC for as long as the context lasts; yields the port (None when turned off)."""
    settings = services.settings
    if not settings.grpc_port:
        yield None
        return
    # A message holds what a REST body may: a batch of images.
    limit = settings.max_batch_upload_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1),
        ]
    )
    calls = Calls(services)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        tfserving.PredictionService(calls), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(tfserving.ModelService(calls), server)
    kserve_grpc.add_GRPCInferenceServiceServicer_to_server(kserve.InferenceService(calls), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection([*SERVED, health_name, reflection.SERVICE_NAME], server)
    for name in SERVED:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port(address(settings.host, settings.grpc_port))
    await server.start()
    draining: set[asyncio.Task[None]] = set()

    def not_serving() -> None:
        draining.add(asyncio.get_running_loop().create_task(health.enter_graceful_shutdown()))

    services.traffic.on_drain.append(not_serving)
    try:
        yield port
    finally:
        services.traffic.on_drain.remove(not_serving)
        await health.enter_graceful_shutdown()
        await server.stop(settings.shutdown_timeout_s)
