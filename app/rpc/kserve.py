"""KServe v2 / Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, as Triton and
`tritonclient.grpc` speak it), over the same registry and batcher as its REST form.

`ModelInfer` takes the model's one input as FP32 [N,28,28,1], [N,28,28] or [N,784] (pixels in
0-255), or as BYTES [N] of encoded images, each either in `raw_input_contents` or in the tensor's
typed contents; it answers FP32 [N, classes] of probabilities in `raw_output_contents`, or with
the `classification` parameter on an output the k best classes as "score:index:label"; a client
may also ask for `digit_check`, BYTES [N]: "digit", "not_a_digit" or "several_digits".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.errors import InvalidArgumentError
from app.inference import Classified
from app.model_format import INPUT_SHAPE
from app.models import LoadedModel
from app.protocols import (
    DIGIT_CHECK_OUTPUT,
    EXTENSIONS,
    PLATFORM,
    SERVER_NAME,
    SERVER_VERSION,
    digit_checks,
    output_names,
    repository_index,
    version_number,
)
from app.rpc.calls import KSERVE, Calls, Context
from app.rpc.protos import kserve_grpc, kserve_pb2
from app.tensors import (
    classification_strings,
    images_count_checked,
    instance_count,
    join_bytes_elements,
    shaped_inputs,
    split_bytes_elements,
)

SERVICE = "/inference.GRPCInferenceService/"


class InferenceService(kserve_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    @property
    def _registry(self) -> Any:
        return self.calls.services.inference.registry

    def _model(self, name: str, version_text: str) -> LoadedModel:
        model: LoadedModel = self._registry.resolve(name, version_number(version_text))
        return model

    async def ServerLive(self, request: Any, context: Context) -> Any:
        async def live() -> Any:
            return kserve_pb2.ServerLiveResponse(live=True)

        return await self.calls.run(context, KSERVE, SERVICE + "ServerLive", live, ready=False)

    async def ServerReady(self, request: Any, context: Context) -> Any:
        async def ready() -> Any:
            services = self.calls.services
            return kserve_pb2.ServerReadyResponse(
                ready=services.ready and not services.traffic.draining
            )

        return await self.calls.run(context, KSERVE, SERVICE + "ServerReady", ready, ready=False)

    async def ModelReady(self, request: Any, context: Context) -> Any:
        async def model_ready() -> Any:
            self._model(request.name, request.version)
            return kserve_pb2.ModelReadyResponse(ready=True)

        return await self.calls.run(context, KSERVE, SERVICE + "ModelReady", model_ready)

    async def ServerMetadata(self, request: Any, context: Context) -> Any:
        async def metadata() -> Any:
            return kserve_pb2.ServerMetadataResponse(
                name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
            )

        return await self.calls.run(context, KSERVE, SERVICE + "ServerMetadata", metadata)

    async def ModelMetadata(self, request: Any, context: Context) -> Any:
        async def metadata() -> Any:
            model = self._model(request.name, request.version)
            tensor = kserve_pb2.ModelMetadataResponse.TensorMetadata
            signature = model.signature
            return kserve_pb2.ModelMetadataResponse(
                name=model.name,
                versions=[str(number) for number in sorted(self._registry.served)],
                platform=PLATFORM,
                inputs=[
                    tensor(name=signature.input_name, datatype="FP32", shape=[-1, *INPUT_SHAPE])
                ],
                outputs=[
                    tensor(
                        name=signature.output_name,
                        datatype="FP32",
                        shape=[-1, signature.num_classes],
                    ),
                    *(
                        [tensor(name=DIGIT_CHECK_OUTPUT, datatype="BYTES", shape=[-1])]
                        if model.detector is not None
                        else []
                    ),
                ],
            )

        return await self.calls.run(context, KSERVE, SERVICE + "ModelMetadata", metadata)

    async def ModelInfer(self, request: Any, context: Context) -> Any:
        async def infer() -> Any:
            model = self._model(request.model_name, request.model_version)
            data = self._input(request, model)
            requested = self._requested_outputs(request, model)
            classified = await self.calls.services.inference.classify_tensor(data, model)
            return _response(request, model, classified, requested)

        return await self.calls.run(context, KSERVE, SERVICE + "ModelInfer", infer, inference=True)

    def _input(self, request: Any, model: LoadedModel) -> np.ndarray | list[bytes]:
        """(N, 28, 28) model inputs from FP32, or N encoded images from BYTES."""
        name = model.signature.input_name
        if len(request.inputs) != 1 or request.inputs[0].name != name:
            given = [tensor.name for tensor in request.inputs]
            raise InvalidArgumentError(
                f"Expected one input, '{name}', for model '{model.name}'; got {given}."
            )
        tensor, raw = request.inputs[0], list(request.raw_input_contents)
        if len(raw) > 1:
            raise InvalidArgumentError("raw_input_contents holds more than the one input.")
        what, shape = f"Input '{name}'", list(tensor.shape)
        count = instance_count(shape, self.calls.services.settings.max_batch_files, what=what)
        if tensor.datatype == "FP32":
            if raw:
                if len(raw[0]) % 4:
                    raise InvalidArgumentError(f"{what}: FP32 raw contents come in 4-byte values.")
                flat = np.frombuffer(raw[0], dtype="<f4")
            else:
                flat = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
            return shaped_inputs(flat, shape, what=what)
        if tensor.datatype == "BYTES":
            if raw:
                images = split_bytes_elements(raw[0], count, what=what)
            else:
                images = list(tensor.contents.bytes_contents)
            images_count_checked(images, shape, what=what)
            return images
        raise InvalidArgumentError(
            f"{what} has datatype {tensor.datatype!r}: send FP32 model inputs or BYTES encoded "
            "images."
        )

    @staticmethod
    def _requested_outputs(request: Any, model: LoadedModel) -> list[tuple[str, int]]:
        """(name, 0 for probabilities or k for the `classification` of the k best classes) of
        each output asked for, or of every output when none is."""
        if not request.outputs:  # The protocol's default: every output.
            return [(name, 0) for name in output_names(model)]
        requested = []
        for output in request.outputs:
            if output.name not in output_names(model):
                raise InvalidArgumentError(
                    f"Unexpected output '{output.name}': the outputs are {output_names(model)}."
                )
            parameter = output.parameters.get("classification")
            if parameter is None:
                requested.append((output.name, 0))
                continue
            classes = parameter.int64_param
            if parameter.WhichOneof("parameter_choice") != "int64_param" or classes < 0:
                raise InvalidArgumentError("'classification' must be a whole number of classes.")
            requested.append((output.name, min(int(classes), model.signature.num_classes)))
        return requested

    async def RepositoryIndex(self, request: Any, context: Context) -> Any:
        async def index() -> Any:
            entry = kserve_pb2.RepositoryIndexResponse.ModelIndex
            return kserve_pb2.RepositoryIndexResponse(
                models=[entry(**model) for model in repository_index(self._registry)]
            )

        return await self.calls.run(context, KSERVE, SERVICE + "RepositoryIndex", index)


def _response(
    request: Any,
    model: LoadedModel,
    classified: list[Classified],
    requested: list[tuple[str, int]],
) -> Any:
    probabilities = np.stack([item.probabilities for item in classified])
    outputs, contents = [], []
    for name, classes in requested:
        output = kserve_pb2.ModelInferResponse.InferOutputTensor(name=name)
        if name == DIGIT_CHECK_OUTPUT:
            output.datatype = "BYTES"
            output.shape.append(len(classified))
            raw = join_bytes_elements([check.encode() for check in digit_checks(classified)])
        elif classes:
            strings = classification_strings(probabilities, model.labels, classes)
            output.datatype = "BYTES"
            output.shape.extend([len(probabilities), classes])
            raw = join_bytes_elements([text.encode() for text in strings])
        else:
            output.datatype = "FP32"
            output.shape.extend(probabilities.shape)
            raw = probabilities.astype("<f4").tobytes()
        outputs.append(output)
        contents.append(raw)
    response = kserve_pb2.ModelInferResponse(
        model_name=model.name,
        model_version=str(model.version),
        id=request.id,
        outputs=outputs,
        raw_output_contents=contents,
    )
    for key, value in request.parameters.items():
        response.parameters[key].CopyFrom(value)
    return response
