"""Hostile: exits at import with status 3, the status reserved for "failed to load",
without the load report a real load failure sends. Not a module to deploy."""
import os

os._exit(3)
