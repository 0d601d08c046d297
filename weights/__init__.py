"""Model weights as a build artifact: catalog, build-time fetch, offline store.

    python -m weights list                               # the catalog
    python -m weights fetch --models v1 --dest DIR       # at image build time
    python -m weights demo --models resnet18 --dest DIR  # untrained, for offline demos

The backend only ever reads a directory through `weights.store.WeightsStore`.
"""
