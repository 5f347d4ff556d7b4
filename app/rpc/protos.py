"""The message and service definitions the gRPC server speaks, from the clients' own packages:
TensorFlow Serving's from `tensorflow-serving-api`, KServe v2's from `tritonclient` (Triton's
`inference.GRPCInferenceService`, the Open Inference Protocol's service and a superset of it).

TensorFlow Serving's modules import TensorFlow's own protos (`tensorflow.core.framework...`), and
importing any `tensorflow.*` module runs `tensorflow/__init__.py`: 2 s and ~590 MB per worker
(measured), although the service runs LiteRT and never needs TensorFlow itself. So, unless
TensorFlow is already loaded, the proto modules are imported under a bare stand-in for the
`tensorflow` package that only says where its files are; the stand-in is removed afterwards, so a
later `import tensorflow` (the TensorFlow runtime, the training script) loads the real package,
which finds these proto modules already imported and uses them as they are.
"""

from __future__ import annotations

import importlib.util
import sys
import types

from tritonclient.grpc import service_pb2 as kserve_pb2
from tritonclient.grpc import service_pb2_grpc as kserve_grpc


def _import_without_tensorflow_init() -> None:
    if "tensorflow" in sys.modules:
        return
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("TensorFlow Serving's protos need the tensorflow(-cpu) package")
    stand_in = types.ModuleType("tensorflow")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = stand_in
    try:
        # The services' own files too: the stubs do not import them, and reflection describes
        # only what is in the descriptor pool.
        for module in ("prediction_service", "model_service"):
            importlib.import_module(f"tensorflow_serving.apis.{module}_pb2")
            importlib.import_module(f"tensorflow_serving.apis.{module}_pb2_grpc")
    finally:
        del sys.modules["tensorflow"]


_import_without_tensorflow_init()

# After the import above: these come from sys.modules.
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

__all__ = [
    "classification_pb2",
    "get_model_metadata_pb2",
    "get_model_status_pb2",
    "kserve_grpc",
    "kserve_pb2",
    "meta_graph_pb2",
    "model_pb2",
    "model_service_pb2_grpc",
    "predict_pb2",
    "prediction_service_pb2_grpc",
    "tensor_pb2",
    "tensor_shape_pb2",
    "types_pb2",
]
