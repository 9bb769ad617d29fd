"""The OpenAPI document and the router agree: every native route is documented, and every
documented operation is a route (a route added or removed without the other fails here)."""

from typing import Any, cast

from cogbox.service import log_routes, native
from cogbox.service.openapi import UNDOCUMENTED_ROUTES, openapi_document
from cogbox.service.sessions import SessionManager

# Building the route tables only closes over the manager; no handler runs here.
_NO_MANAGER = cast(SessionManager, None)


def registered_native_routes() -> set[tuple[str, str]]:
    tables: list[Any] = [native.routes(_NO_MANAGER), log_routes.routes(_NO_MANAGER)]
    return {
        (route.method.lower(), route.path)
        for table in tables
        for route in table
        if route.path.startswith(native.PREFIX + "/")
    }


def documented_operations() -> set[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = openapi_document()["paths"]
    return {(method, path) for path, operations in paths.items() for method in operations}


def test_every_native_route_is_documented_and_every_documented_operation_is_a_route() -> None:
    registered = registered_native_routes() - UNDOCUMENTED_ROUTES
    documented = documented_operations()
    assert (sorted(registered - documented), sorted(documented - registered)) == ([], [])


def test_the_undocumented_routes_are_routes_and_named_in_the_description() -> None:
    description = openapi_document()["info"]["description"]
    assert registered_native_routes() >= UNDOCUMENTED_ROUTES
    assert [path for _, path in UNDOCUMENTED_ROUTES if path not in description] == []
