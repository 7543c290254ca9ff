"""Hostile: its process exits with status 1 while importing. Not a module to deploy.

(Status 3 is reserved for "failed to load", which is not retried.)
"""
import os

os._exit(1)
