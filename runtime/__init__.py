"""The model runtime: bundles, preprocessing and ONNX Runtime sessions. No torch.

The lowest layer of the project, shared by the build and the service:
- the bake step (`bake/`) writes bundles in this format and verifies each one through
  exactly this preprocessing and these sessions;
- the backend (`backend/`) serves through them.
It depends on numpy, Pillow and onnxruntime only (docs/architecture.md says why).
"""
