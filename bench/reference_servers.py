"""The reference servers the benchmark measures beside ours, on the same machine and payloads.

    python -m bench.reference_servers ceiling|seed|unbatched --port 8101 [--workers 2]

- `ceiling`: reads the upload (multipart or raw) and returns a constant: the HTTP ceiling (with
  one worker, or as many as cnn-serve's default with `--workers 2`).
- `grpc-ceiling`: the same for gRPC, one process: KServe v2's ModelInfer and TensorFlow
  Serving's Predict, each request parsed into its message and answered with a constant one, on
  `--grpc-port` (health on `--port`).
- `seed`: the seed's style: `async def` endpoint, Pillow resize, `model.predict` per request.
- `unbatched`: competent but unbatched: a sync endpoint calling the SavedModel signature per
  request, with our own preprocessing.
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import uvicorn
from fastapi import FastAPI, Request, UploadFile
from starlette.responses import JSONResponse, Response

MODEL_DIR = Path(__file__).resolve().parent.parent / "model" / "export" / "mnist" / "1"
CONSTANT = b'{"label":"7","confidence":1.0}'


async def read_upload(request: Request) -> bytes:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:
            upload = form["file"]
            assert not isinstance(upload, str)
            return await upload.read()
    return await request.body()


def ceiling_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        await read_upload(request)
        return Response(CONSTANT, media_type="application/json")

    with_health(app)
    return app


def grpc_ceiling_app(grpc_port: int) -> FastAPI:
    import grpc

    from app.rpc.protos import kserve_pb2, predict_pb2

    answers = {
        ("inference.GRPCInferenceService", "ModelInfer"): (
            kserve_pb2.ModelInferRequest,
            kserve_pb2.ModelInferResponse(
                model_name="mnist", raw_output_contents=[b"\x0e\x00\x00\x000.999999:7:7"]
            ),
        ),
        ("tensorflow.serving.PredictionService", "Predict"): (
            predict_pb2.PredictRequest,
            predict_pb2.PredictResponse(),
        ),
    }
    seven = answers["tensorflow.serving.PredictionService", "Predict"][1].outputs["output_0"]
    seven.dtype = 1  # DT_FLOAT
    seven.tensor_shape.dim.add(size=1)
    seven.tensor_shape.dim.add(size=10)
    seven.tensor_content = np.eye(10, dtype="<f4")[7].tobytes()

    def handler(answer: Any) -> Any:
        async def constant(request: Any, context: Any) -> Any:
            return answer

        return constant

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        server = grpc.aio.server()
        for (service, method), (request_type, answer) in answers.items():
            rpc = grpc.unary_unary_rpc_method_handler(
                handler(answer),
                request_deserializer=request_type.FromString,
                response_serializer=type(answer).SerializeToString,
            )
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, {method: rpc}),)
            )
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        yield
        await server.stop(1)

    app = FastAPI(lifespan=lifespan)
    with_health(app)
    return app


def with_health(app: FastAPI) -> None:
    @app.get("/health/ready")
    @app.get("/health/live")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}


def seed_app(model_dir: Path) -> FastAPI:
    import keras
    from PIL import Image

    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.TFSMLayer(str(model_dir), call_endpoint="serve")]
    )
    app = FastAPI()

    @app.post("/predict")
    async def predict(file: UploadFile) -> JSONResponse:
        image = Image.open(io.BytesIO(await file.read())).convert("L").resize((28, 28))
        pixels = np.asarray(image, dtype=np.float32)[np.newaxis, ..., np.newaxis]
        probabilities = model.predict(pixels, verbose=0)[0]
        return JSONResponse(
            {"label": str(int(probabilities.argmax())), "confidence": float(probabilities.max())}
        )

    with_health(app)
    return app


def unbatched_app(model_dir: Path) -> FastAPI:
    from app.config import Settings
    from app.models import load_model
    from app.preprocess import preprocess
    from app.runtimes import Runtime

    # As the issue defines it: the SavedModel's TensorFlow signature, called per request.
    model = load_model(model_dir, Settings(runtime=Runtime.TENSORFLOW))
    app = FastAPI()

    @app.post("/predict")
    def predict(file: UploadFile) -> JSONResponse:
        probabilities = model.predict_batch([preprocess(file.file.read(), model.profile)])[0]
        best = int(probabilities.argmax())
        return JSONResponse(
            {
                "label": model.labels[best],
                "confidence": float(probabilities[best]),
                "probabilities": dict(zip(model.labels, probabilities.tolist(), strict=True)),
            }
        )

    with_health(app)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["ceiling", "grpc-ceiling", "seed", "unbatched"])
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--grpc-port", type=int, default=8102)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--workers", type=int, default=1, help="ceiling only: worker processes")
    args = parser.parse_args()
    app: FastAPI | str
    if args.kind == "ceiling":
        # Several workers need the app by name, to import it in each.
        app = "bench.reference_servers:ceiling_app" if args.workers > 1 else ceiling_app()
    elif args.kind == "grpc-ceiling":
        app = grpc_ceiling_app(args.grpc_port)
    elif args.kind == "seed":
        app = seed_app(args.model_dir)
    else:
        app = unbatched_app(args.model_dir)

    uvicorn.run(
        app,
        factory=isinstance(app, str),
        workers=args.workers if isinstance(app, str) else None,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
