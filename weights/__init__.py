"""Model weights as a build artifact: catalog, build-time fetch, the lock of what was fetched.

    python -m weights list                               # the catalog
    python -m weights fetch --models v1 --dest DIR       # at image build time
    python -m weights demo --models resnet18 --dest DIR  # untrained, for offline demos

The bake step (`python -m bake`) compiles what was fetched into bundles; the backend reads
only those and never imports this package (it needs torch).
"""
