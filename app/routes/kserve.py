"""KServe v2 / Open Inference Protocol (REST), with Triton's binary tensor data and
classification extensions, over the same registry and batcher.

The input is the model's one input, either as FP32 [N,28,28,1], [N,28,28] or [N,784] (pixels in
0-255) or as BYTES [N] of encoded images, which go through the same preprocessing as uploads
(base64 strings in JSON; length-prefixed bytes in binary). The output is FP32 [N, classes] of
probabilities, or with `"classification": k` the k best classes as "score:index:label"; a client
may also ask for `digit_check`, BYTES [N]: "digit", "not_a_digit" or "several_digits".
`tritonclient` sends binary requests without a Content-Type, so the body is read as it comes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from app.dependencies import Services, accepting_traffic, ready_services
from app.errors import InvalidArgumentError
from app.inference import Classified
from app.model_format import INPUT_SHAPE
from app.models import LoadedModel, ModelRegistry
from app.protocols import (
    DIGIT_CHECK_OUTPUT,
    EXTENSIONS,
    PLATFORM,
    SERVER_NAME,
    digit_checks,
    output_names,
    version_number,
)
from app.routes.direct import DirectRoute
from app.routes.openapi import path_parameters, protocol_error_responses
from app.tensors import (
    classification_strings,
    from_base64,
    images_count_checked,
    instance_count,
    join_bytes_elements,
    shaped_inputs,
    split_bytes_elements,
)

HEADER_LENGTH = "inference-header-content-length"

router = APIRouter(tags=["KServe v2 / Open Inference Protocol"], route_class=DirectRoute)
_MODEL_PATHS = ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}")


@dataclass(frozen=True)
class _RequestedOutput:
    name: str
    binary: bool
    classification: int


async def server_metadata(request: Request) -> Response:
    return JSONResponse(
        {"name": SERVER_NAME, "version": request.app.version, "extensions": EXTENSIONS}
    )


async def live(_: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    accepting_traffic(request)
    return JSONResponse({"ready": True})


def registry_of(request: Request) -> ModelRegistry:
    return ready_services(request).inference.registry


def _served(request: Request) -> tuple[Services, LoadedModel]:
    services = ready_services(request)
    version = version_number(request.path_params.get("model_version", ""))
    model = services.inference.registry.resolve(request.path_params["model_name"], version)
    return services, model


async def model_metadata(request: Request) -> Response:
    _, model = _served(request)
    return JSONResponse(
        {
            "name": model.name,
            "versions": [str(number) for number in sorted(registry_of(request).served)],
            "platform": PLATFORM,
            "inputs": [
                {
                    "name": model.signature.input_name,
                    "datatype": "FP32",
                    "shape": [-1, *INPUT_SHAPE],
                }
            ],
            "outputs": [
                {
                    "name": model.signature.output_name,
                    "datatype": "FP32",
                    "shape": [-1, model.signature.num_classes],
                },
                *(
                    [{"name": DIGIT_CHECK_OUTPUT, "datatype": "BYTES", "shape": [-1]}]
                    if model.detector is not None
                    else []
                ),
            ],
        }
    )


async def model_ready(request: Request) -> Response:
    model = _served(request)[1]
    return JSONResponse({"name": model.name, "ready": True})


async def infer(request: Request) -> Response:
    services, model = _served(request)
    header, binary = _split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidArgumentError(
            f"Expected one input, '{model.signature.input_name}', for model '{model.name}'."
        )
    images_or_pixels, count = _read_input(inputs[0], binary, model, services)
    requested = _requested_outputs(header, model)
    classified = await services.inference.classify_tensor(images_or_pixels, model)
    return _response(header, model, requested, classified, count)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and, with the binary tensor data extension, the bytes after it."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidArgumentError(
                f"Inference-Header-Content-Length {header_length[:20]!r} does not fit the body."
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        binary = b""
    try:
        header = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise InvalidArgumentError(f"The request is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise InvalidArgumentError("The request must be a JSON object.")
    return header, binary


def _read_input(
    tensor: dict[str, Any], binary: bytes, model: LoadedModel, services: Services
) -> tuple[np.ndarray | list[bytes], int]:
    """(N, 28, 28) model inputs from FP32, or N encoded images from BYTES; and N."""
    name, datatype = tensor.get("name"), tensor.get("datatype")
    shape: Any = tensor.get("shape")
    if name != model.signature.input_name:
        raise InvalidArgumentError(
            f"Unexpected inference input '{name}' for model '{model.name}': its input is "
            f"'{model.signature.input_name}'."
        )
    what = f"Input '{name}'"
    count = instance_count(shape, services.settings.max_batch_files, what=what)
    binary_size = _parameters(tensor, f"Input '{name}'").get("binary_data_size")
    if binary_size is not None and (not isinstance(binary_size, int) or binary_size != len(binary)):
        raise InvalidArgumentError(
            f"Input '{name}' declares {binary_size} bytes of binary data; {len(binary)} follow."
        )
    if datatype == "FP32":
        if binary_size is not None:
            if len(binary) % 4:
                raise InvalidArgumentError(f"{what}: FP32 binary data comes in 4-byte values.")
            flat = np.frombuffer(binary, dtype="<f4")
        else:
            try:
                flat = np.asarray(_data(tensor), dtype=np.float32).ravel()
            except (ValueError, TypeError):
                raise InvalidArgumentError(f"{what}: FP32 data must be numbers.") from None
        return shaped_inputs(flat, shape, what=what), count
    if datatype == "BYTES":
        if binary_size is not None:
            images = split_bytes_elements(binary, count, what=what)
        else:
            elements = np.asarray(_data(tensor), dtype=object).ravel()
            images = [from_base64(item, what=f"{what}[{i}]") for i, item in enumerate(elements)]
        images_count_checked(images, shape, what=what)
        return images, count
    raise InvalidArgumentError(
        f"{what} has datatype {datatype!r}: send FP32 model inputs or BYTES encoded images."
    )


def _parameters(holder: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = holder.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidArgumentError(f"{what}: 'parameters' must be an object.")
    return parameters


def _data(tensor: dict[str, Any]) -> Any:
    if "data" not in tensor:
        raise InvalidArgumentError(
            f"Input '{tensor.get('name')}' has neither 'data' nor a binary_data_size."
        )
    return tensor["data"]


def _requested_outputs(header: dict[str, Any], model: LoadedModel) -> list[_RequestedOutput]:
    binary_by_default = bool(_parameters(header, "The request").get("binary_data_output", False))
    outputs = header.get("outputs")
    if outputs is None:  # The protocol's default: every output.
        return [_RequestedOutput(name, binary_by_default, 0) for name in output_names(model)]
    if not isinstance(outputs, list):
        raise InvalidArgumentError("'outputs' must be a list.")
    requested = []
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in output_names(model):
            raise InvalidArgumentError(
                f"Unexpected inference output '{name}' for model '{model.name}': its outputs are "
                f"{output_names(model)}."
            )
        options = _parameters(output, f"Output '{name}'")
        classification = options.get("classification", 0)
        if not isinstance(classification, int) or classification < 0:
            raise InvalidArgumentError("'classification' must be a whole number of classes.")
        binary = bool(options.get("binary_data", binary_by_default))
        requested.append(
            _RequestedOutput(name, binary, min(classification, model.signature.num_classes))
        )
    return requested


def _response(
    header: dict[str, Any],
    model: LoadedModel,
    requested: list[_RequestedOutput],
    classified: list[Classified],
    count: int,
) -> Response:
    probabilities = np.stack([item.probabilities for item in classified]).astype("<f4")
    outputs, blobs = [], []
    for output in requested:
        tensor: dict[str, Any] = {"name": output.name}
        if output.name == DIGIT_CHECK_OUTPUT:
            checks = digit_checks(classified)
            tensor |= {"datatype": "BYTES", "shape": [count]}
            if output.binary:
                blobs.append(join_bytes_elements([check.encode() for check in checks]))
            else:
                tensor["data"] = checks
        elif output.classification:
            strings = classification_strings(probabilities, model.labels, output.classification)
            tensor |= {"datatype": "BYTES", "shape": [count, output.classification]}
            if output.binary:
                blobs.append(join_bytes_elements([text.encode() for text in strings]))
            else:
                tensor["data"] = strings
        else:
            tensor |= {"datatype": "FP32", "shape": list(probabilities.shape)}
            if output.binary:
                blobs.append(probabilities.tobytes())
            else:
                tensor["data"] = probabilities.ravel().tolist()
        if output.binary:
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        outputs.append(tensor)
    body: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if "id" in header:
        body["id"] = header["id"]
    echoed = {
        key: value
        for key, value in _parameters(header, "The request").items()
        if key != "binary_data_output"
    }
    if echoed:
        body["parameters"] = echoed
    body["outputs"] = outputs
    text = json.dumps(body).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(
        text + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )


router.add_api_route("/v2", server_metadata, methods=["GET"], summary="Server metadata")
router.add_api_route("/v2/health/live", live, methods=["GET"], summary="Server liveness")
router.add_api_route(
    "/v2/health/ready",
    ready,
    methods=["GET"],
    summary="Server readiness",
    responses=protocol_error_responses(503),
)
for _path in _MODEL_PATHS:
    _extra = path_parameters(_path)
    for _suffix, _endpoint, _method, _summary, _errors in (
        ("", model_metadata, "GET", "Model metadata", (404, 503)),
        ("/ready", model_ready, "GET", "Model readiness", (404, 503)),
        (
            "/infer",
            infer,
            "POST",
            "Inference (JSON, or JSON and binary tensor data)",
            (400, 404, 408, 413, 503, 504),
        ),
    ):
        router.add_api_route(
            _path + _suffix,
            _endpoint,
            methods=[_method],
            summary=_summary,
            openapi_extra=_extra,
            responses=protocol_error_responses(*_errors),
        )
