"""Flask backend: classify an image (URL or upload) with baked torchvision models."""
