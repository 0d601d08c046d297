"""The bake step: fetched weights -> ONNX graph -> verified bundle (build time; needs torch).

    python -m bake --models v1 --weights WEIGHTS_DIR --dest BUNDLES_DIR

For each model: torchvision builds the architecture and loads the fetched file strictly,
`torch.onnx.export` writes the graph with a dynamic batch dimension and the weights as
external data, ONNX Runtime runs it on generated images through the runtime's own
preprocessing, and the build fails if any probability differs from torchvision's by more than
1e-4. Only then is the bundle written (runtime/bundle.py has the format). A bundle whose
inputs are unchanged is verified and kept. docs/architecture.md has the whole picture.
"""
