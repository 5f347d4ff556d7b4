"""TensorFlow Serving's gRPC API (`tensorflow.serving.PredictionService` and `ModelService`),
over the same registry and batcher as its REST API.

`Predict` takes the model input as a numeric tensor ([N,28,28,1], [N,28,28] or [N,784], pixels in
0-255) or encoded images as a DT_STRING tensor [N], which go through the same preprocessing as
uploads; `Classify` takes tf.Examples whose input feature holds the 784 pixels or one encoded
image. Versions are chosen by `model_spec.version` or `model_spec.version_label`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.errors import InvalidArgumentError, UnimplementedError
from app.inference import Classified
from app.model_format import INPUT_SHAPE, SIGNATURE_NAME
from app.models import LoadedModel, VersionState
from app.protocols import (
    DIGIT_CHECK_OUTPUT,
    DIGIT_CHECK_SIGNATURE,
    digit_checks,
    requested_signature,
    signature_names,
)
from app.rpc.calls import TFSERVING, Calls, Context
from app.rpc.protos import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    meta_graph_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from app.tensors import images_count_checked, instance_count, shaped_inputs, top_classes

PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"
# Numeric tensors: how their bytes are laid out, and which repeated field holds typed values.
_NUMERIC = {
    types_pb2.DT_FLOAT: ("<f4", "float_val"),
    types_pb2.DT_DOUBLE: ("<f8", "double_val"),
    types_pb2.DT_UINT8: ("u1", "int_val"),
    types_pb2.DT_INT32: ("<i4", "int_val"),
    types_pb2.DT_INT64: ("<i8", "int64_val"),
}
_OK, _UNKNOWN = 0, 2  # tensorflow.error.Code
Images = list[bytes]


def tensor_values(tensor: Any, limit: int, what: str) -> np.ndarray | Images:
    """(N, 28, 28) model inputs from a numeric TensorProto, or N encoded images from a string
    one."""
    shape = [int(dim.size) for dim in tensor.tensor_shape.dim]
    instance_count(shape, limit, what=what)
    if tensor.dtype == types_pb2.DT_STRING:
        images = list(tensor.string_val)
        images_count_checked(images, shape, what=what)
        return images
    if tensor.dtype not in _NUMERIC:
        name = types_pb2.DataType.Name(tensor.dtype)
        raise InvalidArgumentError(
            f"{what} has dtype {name}: send DT_FLOAT pixels or DT_STRING encoded images."
        )
    layout, field = _NUMERIC[tensor.dtype]
    if tensor.tensor_content:
        if len(tensor.tensor_content) % np.dtype(layout).itemsize:
            raise InvalidArgumentError(f"{what}: tensor_content is not whole values.")
        flat = np.frombuffer(tensor.tensor_content, dtype=layout)
    else:
        flat = np.asarray(getattr(tensor, field), dtype=layout)
    return shaped_inputs(flat.astype(np.float32), shape, what=what)


def float_tensor(values: np.ndarray) -> Any:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=_shape(values.shape),
        tensor_content=values.astype("<f4").tobytes(),
    )


def string_tensor(values: Sequence[bytes]) -> Any:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=_shape([len(values)]), string_val=values
    )


def _shape(sizes: Sequence[int]) -> Any:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in sizes]
    )


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    @property
    def _limit(self) -> int:
        return self.calls.services.settings.max_batch_files

    def _model(self, spec: Any, allow_digit_check: bool = False) -> tuple[LoadedModel, str]:
        """The version a request names, and the signature (the default one if none)."""
        model = self.calls.services.inference.registry.resolve(spec.name, *_version_of(spec))
        signature = requested_signature(spec.signature_name, model, digit_check=allow_digit_check)
        return model, signature

    async def _classify(self, data: np.ndarray | Images, model: LoadedModel) -> list[Classified]:
        return await self.calls.services.inference.classify_tensor(data, model)

    async def Predict(self, request: Any, context: Context) -> Any:
        async def predict() -> Any:
            model, signature = self._model(request.model_spec, allow_digit_check=True)
            name, output = model.signature.input_name, model.signature.output_name
            if set(request.inputs) != {name}:
                raise InvalidArgumentError(
                    f"Expected one input, '{name}'; got {sorted(request.inputs)}."
                )
            outputs = [output] if signature == SIGNATURE_NAME else [output, DIGIT_CHECK_OUTPUT]
            if set(request.output_filter) - set(outputs):
                raise InvalidArgumentError(f"The signature's outputs are {outputs}.")
            wanted = set(request.output_filter) or set(outputs)
            data = tensor_values(request.inputs[name], self._limit, f"Input '{name}'")
            classified = await self._classify(data, model)
            response = predict_pb2.PredictResponse(model_spec=_spec(model, signature))
            if output in wanted:
                probabilities = np.stack([item.probabilities for item in classified])
                response.outputs[output].CopyFrom(float_tensor(probabilities))
            if DIGIT_CHECK_OUTPUT in wanted:
                checks = [check.encode() for check in digit_checks(classified)]
                response.outputs[DIGIT_CHECK_OUTPUT].CopyFrom(string_tensor(checks))
            return response

        return await self.calls.run(
            context, TFSERVING, PREDICTION_SERVICE + "Predict", predict, inference=True
        )

    async def Classify(self, request: Any, context: Context) -> Any:
        async def classify() -> Any:
            model, _ = self._model(request.model_spec)
            data = self._examples(request.input, model)
            classified = await self._classify(data, model)
            probabilities = np.stack([item.probabilities for item in classified])
            ranked = top_classes(probabilities, model.labels, len(model.labels))
            result = classification_pb2.ClassificationResult(
                classifications=[
                    classification_pb2.Classifications(
                        classes=[
                            classification_pb2.Class(label=label, score=score)
                            for score, _, label in row
                        ]
                    )
                    for row in ranked
                ]
            )
            return classification_pb2.ClassificationResponse(model_spec=_spec(model), result=result)

        return await self.calls.run(
            context, TFSERVING, PREDICTION_SERVICE + "Classify", classify, inference=True
        )

    def _examples(self, given: Any, model: LoadedModel) -> np.ndarray | Images:
        """The input feature of each tf.Example (or the shared context): all 784 pixels, or all
        one encoded image each."""
        kind = given.WhichOneof("kind")
        if kind == "example_list":
            examples, context = list(given.example_list.examples), None
        elif kind == "example_list_with_context":
            listed = given.example_list_with_context
            examples, context = list(listed.examples), listed.context
        else:
            raise InvalidArgumentError("The input holds no examples.")
        name = model.signature.input_name
        instance_count([len(examples)], self._limit, what="The examples")
        features = []
        for example in examples:
            if name in example.features.feature:
                features.append(example.features.feature[name])
            elif context is not None and name in context.features.feature:
                features.append(context.features.feature[name])
            else:
                raise InvalidArgumentError(f"Each example needs the feature '{name}'.")
        if all(feature.WhichOneof("kind") == "bytes_list" for feature in features):
            if any(len(feature.bytes_list.value) != 1 for feature in features):
                raise InvalidArgumentError(f"A bytes feature '{name}' holds one encoded image.")
            return [feature.bytes_list.value[0] for feature in features]
        try:
            pixels = [_numbers(feature) for feature in features]
        except ValueError:
            raise InvalidArgumentError(
                f"The feature '{name}' must hold numbers in every example, or an image in every "
                "example."
            ) from None
        lengths = {len(values) for values in pixels}
        if len(lengths) != 1:
            raise InvalidArgumentError(f"The feature '{name}' differs in length between examples.")
        flat = np.asarray(pixels, dtype=np.float32)
        return shaped_inputs(flat, list(flat.shape), what=f"The feature '{name}'")

    async def GetModelMetadata(self, request: Any, context: Context) -> Any:
        async def metadata() -> Any:
            model, _ = self._model(request.model_spec)
            fields = set(request.metadata_field)
            if not fields:
                raise InvalidArgumentError("metadata_field must name at least one field.")
            if fields != {"signature_def"}:
                raise InvalidArgumentError(
                    f"Metadata fields {sorted(fields - {'signature_def'})} are not supported."
                )
            response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=_spec(model))
            response.metadata["signature_def"].Pack(_signatures(model))
            return response

        return await self.calls.run(
            context, TFSERVING, PREDICTION_SERVICE + "GetModelMetadata", metadata
        )

    async def Regress(self, request: Any, context: Context) -> Any:
        async def regress() -> Any:
            self._model(request.model_spec)
            raise InvalidArgumentError(
                "This model is a classifier and has no regression signature: use Predict or "
                "Classify."
            )

        return await self.calls.run(context, TFSERVING, PREDICTION_SERVICE + "Regress", regress)

    async def MultiInference(self, request: Any, context: Context) -> Any:
        async def unimplemented() -> Any:
            raise UnimplementedError("MultiInference is not offered: use Predict or Classify.")

        return await self.calls.run(
            context, TFSERVING, PREDICTION_SERVICE + "MultiInference", unimplemented
        )


class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def GetModelStatus(self, request: Any, context: Context) -> Any:
        async def status() -> Any:
            spec = request.model_spec
            registry = self.calls.services.inference.registry
            statuses = registry.version_statuses(spec.name, *_version_of(spec))
            states = get_model_status_pb2.ModelVersionStatus.State
            return get_model_status_pb2.GetModelStatusResponse(
                model_version_status=[
                    get_model_status_pb2.ModelVersionStatus(
                        version=number,
                        state=states.Value(VersionState(status.state).value),
                        status={
                            "error_code": _UNKNOWN if status.error_message else _OK,
                            "error_message": status.error_message,
                        },
                    )
                    for number, status in statuses
                ]
            )

        return await self.calls.run(context, TFSERVING, MODEL_SERVICE + "GetModelStatus", status)


def _version_of(spec: Any) -> tuple[int | None, str | None]:
    """The version number or label a ModelSpec names (a oneof; neither: the newest)."""
    return (spec.version.value if spec.HasField("version") else None), spec.version_label or None


def _spec(model: LoadedModel, signature: str = SIGNATURE_NAME) -> Any:
    spec = model_pb2.ModelSpec(name=model.name, signature_name=signature)
    spec.version.value = model.version
    return spec


def _signatures(model: LoadedModel) -> Any:
    signature = model.signature

    def info(name: str, sizes: Sequence[int], dtype: int = types_pb2.DT_FLOAT) -> Any:
        return meta_graph_pb2.TensorInfo(name=name, dtype=dtype, tensor_shape=_shape(sizes))

    signature_def = meta_graph_pb2.SignatureDef(
        inputs={
            signature.input_name: info(
                f"{SIGNATURE_NAME}_{signature.input_name}:0", [-1, *INPUT_SHAPE]
            )
        },
        outputs={
            signature.output_name: info("StatefulPartitionedCall:0", [-1, signature.num_classes])
        },
        method_name="tensorflow/serving/predict",
    )
    signature_defs = {SIGNATURE_NAME: signature_def}
    if DIGIT_CHECK_SIGNATURE in signature_names(model):
        checked = meta_graph_pb2.SignatureDef()
        checked.CopyFrom(signature_def)
        checked.outputs[DIGIT_CHECK_OUTPUT].CopyFrom(
            info(DIGIT_CHECK_OUTPUT, [-1], types_pb2.DT_STRING)
        )
        signature_defs[DIGIT_CHECK_SIGNATURE] = checked
    return get_model_metadata_pb2.SignatureDefMap(signature_def=signature_defs)


def _numbers(feature: Any) -> list[float]:
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
        return list(feature.float_list.value)
    if kind == "int64_list":
        return [float(value) for value in feature.int64_list.value]
    raise ValueError(kind)
