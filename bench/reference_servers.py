"""The reference servers the benchmark measures beside ours, on the same machine and payloads.

    python -m bench.reference_servers ceiling|seed|unbatched --port 8101

- `ceiling`: reads the upload (multipart or raw) and returns a constant: the HTTP ceiling.
- `seed`: the seed's style: `async def` endpoint, Pillow resize, `model.predict` per request.
- `unbatched`: competent but unbatched: a sync endpoint calling the SavedModel signature per
  request, with our own preprocessing.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

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

    return app


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

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["ceiling", "seed", "unbatched"])
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    args = parser.parse_args()
    if args.kind == "ceiling":
        app = ceiling_app()
    elif args.kind == "seed":
        app = seed_app(args.model_dir)
    else:
        app = unbatched_app(args.model_dir)

    @app.get("/health/ready")
    @app.get("/health/live")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
