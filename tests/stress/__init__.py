"""Stress scripts: run by hand (``python tests/stress/<name>.py``), not collected as tests."""
