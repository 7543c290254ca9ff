"""The WSGI entry point gunicorn loads: ``hostd.wsgi:application``.

The host passes its runtime file in ``INSIGHTS_RUNTIME``; sockets are opened
lazily in each worker, after gunicorn forked it.
"""
import os

from .app import create_app
from .web import WebContext

#: the worker's handle on the host
web = WebContext(os.environ["INSIGHTS_RUNTIME"])
application = create_app(web)
