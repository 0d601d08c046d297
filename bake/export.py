"""torchvision module -> ONNX graph with a dynamic batch dimension and external weights."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import onnx
import torch

from runtime.bundle import GRAPH, GRAPH_DATA


class ExportError(RuntimeError):
    """torch.onnx.export failed or wrote something the runtime cannot use."""


def export_onnx(
    module: torch.nn.Module, input_size: int, directory: Path, *, model_id: str
) -> dict:
    """Write `directory/model.onnx` (+ `.data`); give the opset and the seconds it took.

    The dynamo exporter (torch.export, then onnxscript) is torch's supported one. The batch
    dimension is `Dim.DYNAMIC`: a `Dim` with `min=1` is rejected by the exporter for these
    models ("Invalid ranges"). Weights go to one external file, which ONNX Runtime memory-maps
    instead of copying into the heap.
    """
    example = torch.rand(2, 3, input_size, input_size)
    started = time.perf_counter()
    chatter = io.StringIO()  # the exporter narrates every step on stdout
    try:
        with contextlib.redirect_stdout(chatter):
            torch.onnx.export(
                module,
                (example,),
                str(directory / GRAPH),
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                external_data=True,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; name the model and stop the build
        raise ExportError(
            f"{model_id}: torch.onnx.export failed: {type(exc).__name__}: {exc}\n"
            f"{chatter.getvalue()[-2000:]}"
        ) from exc
    seconds = time.perf_counter() - started
    if not (directory / GRAPH_DATA).is_file():
        raise ExportError(f"{model_id}: the export wrote no external weights file {GRAPH_DATA}")
    graph = onnx.load(str(directory / GRAPH), load_external_data=False)
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    if batch.HasField("dim_value"):
        raise ExportError(f"{model_id}: the exported batch dimension is fixed at {batch.dim_value}")
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    return {"opset": opset, "seconds": round(seconds, 2)}
