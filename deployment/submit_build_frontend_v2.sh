#!/bin/sh
# The assignment's script, kept by name: python3 -m deployment build frontend (add --help).
cd "$(dirname "$0")/.." && exec python3 -m deployment build frontend "$@"
