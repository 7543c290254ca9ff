"""The Falcon application factory."""
from __future__ import annotations

import falcon

from sandbox.errors import InsightsError

from .auth import Authenticator
from .dashboard import (AssetResource, DashboardResource, EventPropertiesResource, SchemaResource,
                        make_templates)
from .errors import handle_insights_error, handle_unexpected
from .metrics import build as build_metrics
from .login import LoginResource
from .openapi import OpenAPIResource
from .origin import OriginGuard
from .xapi import AboutResource, StatementsResource
from .resources import (CronRunResource, DeadLettersResource, RebuildResource, DeadLettersRetryResource, EventResource, FileResource,
                        HealthResource, ModulesResource, QueryResource, StaticResource, ViewResource)

__all__ = ["create_app"]


def create_app(web) -> falcon.App:
    """Build the HTTP API over ``web`` (a :class:`hostd.web.WebContext` or a stand-in).

    :returns: the WSGI application.
    """
    metrics_middleware, metrics = build_metrics(lambda: web.module_status(), lambda: web.table.snapshot().modules,
                                                getattr(web, "call_observers", None),
                                                getattr(web, "retention_stats", None))
    authenticator = Authenticator(web.config)
    app = falcon.App(middleware=[OriginGuard(web.config["server.bind"]), authenticator, metrics_middleware])
    app.req_options.auto_parse_form_urlencoded = False
    app.req_options.keep_blank_qs_values = True
    templates = make_templates()
    app.add_route("/", DashboardResource(web, templates))
    app.add_route("/assets/{file}", AssetResource())
    app.add_route("/view/{name}", ViewResource(web))
    app.add_route("/query/{name}", QueryResource(web))
    app.add_route("/schema", SchemaResource(web, templates))
    app.add_route("/event_properties", EventPropertiesResource(web, templates))
    app.add_route("/modules", ModulesResource(web))
    app.add_route("/modules/{name}/dead_letters", DeadLettersResource(web))
    app.add_route("/modules/{name}/dead_letters/retry", DeadLettersRetryResource(web))
    app.add_route("/modules/{name}/cron/{task}/run", CronRunResource(web))
    app.add_route("/modules/{name}/rebuild", RebuildResource(web))
    app.add_route("/login", LoginResource(web, templates, authenticator))
    app.add_route("/healthz", HealthResource(web))
    app.add_route("/metrics", metrics)
    app.add_route("/event", EventResource(web))
    app.add_route("/fs/{module}/{path:path}", FileResource(web))
    app.add_route("/static/{module}/{path:path}", StaticResource(web))
    app.add_route("/xapi/statements", StatementsResource(web))
    app.add_route("/xapi/about", AboutResource())
    app.add_route("/openapi.json", OpenAPIResource(web, app))
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_unexpected)
    app.add_error_handler(InsightsError, handle_insights_error)
    return app
