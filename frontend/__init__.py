"""The Streamlit page of Baked Vision and its backend client (no torch, no backend imports)."""
