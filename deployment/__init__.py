"""Deploy Baked Vision to Google Cloud: `python3 -m deployment --help` (deployment/README.md)."""
