"""TensorFlow Serving's REST API (its `api_rest.md`), over the same registry and batcher.

    POST /v1/models/{name}[/versions/{version}|/labels/{label}]:predict|:classify|:regress
    GET  /v1/models/{name}[/versions/{version}|/labels/{label}][/metadata]

An instance is the model input as numbers (28x28, 28x28x1 or 784, in 0-255) or an encoded
image as `{"b64": "..."}`, which goes through the same preprocessing as an upload. The signature
`digit_check` answers the probabilities and, as a second output, "digit", "not_a_digit" or
"several_digits" for each instance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import JSONResponse, Response

from app.dependencies import Services, ready_services
from app.errors import InvalidArgumentError, MalformedRequestError
from app.inference import Classified
from app.model_format import INPUT_SHAPE, SIGNATURE_NAME
from app.models import LoadedModel
from app.protocols import (
    DIGIT_CHECK_OUTPUT,
    DIGIT_CHECK_SIGNATURE,
    digit_checks,
    requested_signature,
    signature_names,
)
from app.routes.direct import DirectRoute
from app.routes.openapi import path_parameters, protocol_error_responses
from app.tensors import from_base64, model_inputs, top_classes

PREFIX = "/v1/models/"


class _NameConvertor(Convertor[str]):
    """A model name or version label: anything up to a `/` or the `:verb`."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("servable", _NameConvertor())

router = APIRouter(tags=["TensorFlow Serving REST API"], route_class=DirectRoute)
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]

_MODEL = "/v1/models/{model_name:servable}"
_SELECTORS = {
    "": "the newest version",
    "/versions/{version:int}": "a version by number",
    "/labels/{label:servable}": "a version by label",
}


def _documented(path: str, summary: str, verb: str) -> dict[str, Any]:
    extra = path_parameters(path)
    statuses = (400, 404, 408, 413, 503, 504) if verb else (404, 503)
    if verb:
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "As in TensorFlow Serving's REST API.",
        }
    return {
        "summary": summary,
        "openapi_extra": extra,
        "responses": protocol_error_responses(*statuses),
    }


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise InvalidArgumentError(f"JSON Parse error: {error}") from None
    if not isinstance(body, dict):
        raise InvalidArgumentError("The request body must be a JSON object.")
    return body


def _served(request: Request) -> tuple[Services, LoadedModel]:
    services = ready_services(request)
    parameters = request.path_params
    model = services.inference.registry.resolve(
        parameters["model_name"], parameters.get("version"), parameters.get("label")
    )
    return services, model


async def _classify(
    services: Services, model: LoadedModel, instances: list[Any], what: str
) -> list[Classified]:
    """Instances that are all `{"b64": ...}` images, or all numbers."""
    if not instances:
        raise InvalidArgumentError(f"{what} holds no instances.")
    limit = services.settings.max_batch_files
    if len(instances) > limit:
        raise MalformedRequestError(f"Too many instances: the limit is {limit} per request.")
    unwrapped = [_unwrap(instance, model) for instance in instances]
    images = [instance["b64"] for instance in unwrapped if isinstance(instance, dict)]
    if images and len(images) != len(unwrapped):
        raise InvalidArgumentError(f"{what} mixes b64 images and numbers: send one kind.")
    if images:
        data = [from_base64(image, what=f"{what}[{i}].b64") for i, image in enumerate(images)]
        return await services.inference.classify_images(data, model)
    return await services.inference.classify_inputs(model_inputs(unwrapped, what=what), model)


def _unwrap(instance: Any, model: LoadedModel) -> Any:
    """An instance may name the input (`{"image": ...}`) or be the input itself."""
    if isinstance(instance, dict) and set(instance) == {model.signature.input_name}:
        instance = instance[model.signature.input_name]
    if isinstance(instance, dict) and set(instance) != {"b64"}:
        raise InvalidArgumentError(
            f"An instance object must be {{'b64': ...}} or name the input "
            f"'{model.signature.input_name}'; got keys {sorted(instance)}."
        )
    return instance


async def predict(request: Request) -> Response:
    services, model = _served(request)
    body = await _body(request)
    signature = requested_signature(body.get("signature_name"), model, digit_check=True)
    checked = signature == DIGIT_CHECK_SIGNATURE
    if ("instances" in body) == ("inputs" in body):
        raise InvalidArgumentError("Send either 'instances' (row format) or 'inputs' (columnar).")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise InvalidArgumentError("'instances' must be a list.")
        classified = await _classify(services, model, instances, "instances")
        if not checked:
            return JSONResponse(
                {"predictions": [item.probabilities.tolist() for item in classified]}
            )
        rows = zip(classified, digit_checks(classified), strict=True)
        output = model.signature.output_name
        return JSONResponse(
            {
                "predictions": [
                    {output: item.probabilities.tolist(), DIGIT_CHECK_OUTPUT: check}
                    for item, check in rows
                ]
            }
        )
    inputs = body["inputs"]
    if isinstance(inputs, dict):
        if set(inputs) != {model.signature.input_name}:
            raise InvalidArgumentError(
                f"'inputs' must name the one input '{model.signature.input_name}'."
            )
        inputs = inputs[model.signature.input_name]
    if not isinstance(inputs, list):
        raise InvalidArgumentError("'inputs' must be a list of instances.")
    classified = await _classify(services, model, inputs, "inputs")
    probabilities = [item.probabilities.tolist() for item in classified]
    if not checked:
        return JSONResponse({"outputs": probabilities})
    return JSONResponse(
        {
            "outputs": {
                model.signature.output_name: probabilities,
                DIGIT_CHECK_OUTPUT: digit_checks(classified),
            }
        }
    )


async def classify(request: Request) -> Response:
    services, model = _served(request)
    body = await _body(request)
    requested_signature(body.get("signature_name"), model, digit_check=False)
    examples, context = body.get("examples"), body.get("context", {})
    if not isinstance(examples, list) or not isinstance(context, dict):
        raise InvalidArgumentError("'examples' must be a list of feature maps, 'context' a map.")
    features = [{**context, **example} for example in examples if isinstance(example, dict)]
    if len(features) != len(examples):
        raise InvalidArgumentError("Each example must be a map of feature names to values.")
    name = model.signature.input_name
    if any(name not in feature for feature in features):
        raise InvalidArgumentError(f"Each example needs the feature '{name}'.")
    classified = await _classify(services, model, [f[name] for f in features], "examples")
    probabilities = np.stack([item.probabilities for item in classified])
    ranked = top_classes(probabilities, model.labels, len(model.labels))
    return JSONResponse({"result": [[[label, score] for score, _, label in row] for row in ranked]})


async def regress(request: Request) -> Response:
    _served(request)
    raise InvalidArgumentError(
        "This model is a classifier and has no regression signature: use :predict or :classify."
    )


async def status(request: Request) -> Response:
    """Every version's state, or the one asked for (TensorFlow Serving's GetModelStatus): a
    version that failed to load is END with its error."""
    registry = ready_services(request).inference.registry
    parameters = request.path_params
    statuses = registry.version_statuses(
        parameters["model_name"], parameters.get("version"), parameters.get("label")
    )
    return JSONResponse(
        {
            "model_version_status": [
                {
                    "version": str(number),
                    "state": status.state.value,
                    "status": {
                        "error_code": "UNKNOWN" if status.error_message else "OK",
                        "error_message": status.error_message,
                    },
                }
                for number, status in statuses
            ]
        }
    )


def _tensor_info(shape: list[int], tensor: str, dtype: str = "DT_FLOAT") -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in shape],
            "unknown_rank": False,
        },
        "name": tensor,
    }


async def metadata(request: Request) -> Response:
    _, model = _served(request)
    signature = model.signature
    signature_def: dict[str, Any] = {
        "inputs": {
            signature.input_name: _tensor_info(
                [-1, *INPUT_SHAPE], f"{SIGNATURE_NAME}_{signature.input_name}:0"
            )
        },
        "outputs": {
            signature.output_name: _tensor_info(
                [-1, signature.num_classes], "StatefulPartitionedCall:0"
            )
        },
        "method_name": "tensorflow/serving/predict",
    }
    signature_defs = {SIGNATURE_NAME: signature_def}
    if DIGIT_CHECK_SIGNATURE in signature_names(model):
        check = _tensor_info([-1], DIGIT_CHECK_OUTPUT, "DT_STRING")
        outputs = {**signature_def["outputs"], DIGIT_CHECK_OUTPUT: check}
        signature_defs[DIGIT_CHECK_SIGNATURE] = {**signature_def, "outputs": outputs}
    return JSONResponse(
        {
            "model_spec": {
                "name": model.name,
                "signature_name": "",
                "version": str(model.version),
            },
            "metadata": {"signature_def": {"signature_def": signature_defs}},
        }
    )


for _selector, _which in _SELECTORS.items():
    _path = _MODEL + _selector
    for _verb, _endpoint, _summary in (
        (":predict", predict, f"Predict with {_which}"),
        (":classify", classify, f"Classify examples with {_which}"),
        (":regress", regress, "Regress (not offered: this model is a classifier)"),
    ):
        router.add_api_route(
            _path + _verb, _endpoint, methods=["POST"], **_documented(_path, _summary, _verb)
        )
    router.add_api_route(
        _path, status, methods=["GET"], **_documented(_path, f"Status of {_which}", "")
    )
    router.add_api_route(
        _path + "/metadata",
        metadata,
        methods=["GET"],
        **_documented(_path, f"Signature of {_which}", ""),
    )
