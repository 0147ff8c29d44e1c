"""What every CertHub API shares: DigitalOcean-style errors, pagination and the caller's team."""

import json
import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, parsers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from certhub.errors import Invalid
from certhub.models import Team

log = logging.getLogger(__name__)
# Seconds a client is asked to wait when the database is away.
DATABASE_RETRY_AFTER = 5

NOT_FOUND_MESSAGE = "The resource you were accessing could not be found."
ERROR_IDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_entity_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "server_error",
    503: "service_unavailable",
}


class Unprocessable(exceptions.ValidationError):
    """Validation failure answered as DigitalOcean does: 422 unprocessable_entity.

    `error_code`, when given, is a stable machine-readable reason added to the body.
    """

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(self, detail=None, *, error_code: str | None = None):
        super().__init__(detail)
        self.error_code = error_code


def error_body(status_code: int, message: str, **extra: Any) -> dict:
    return {"id": ERROR_IDS.get(status_code, "error"), "message": message, **extra}


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error detail into {"field.sub": ["reason", ...]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            out.update(_flatten(value, f"{prefix}.{name}" if prefix and name else prefix or name))
        return out
    if isinstance(detail, list) and detail and all(isinstance(d, (dict, list)) for d in detail):
        out = {}
        for index, value in enumerate(detail):
            out.update(_flatten(value, f"{prefix}[{index}]"))
        return out
    items = detail if isinstance(detail, list) else [detail]
    return {prefix: [str(item) for item in items]}


def exception_handler(exc: Exception, context: dict) -> Response:
    if isinstance(exc, Invalid):  # a service refused the input: DigitalOcean's 422
        exc = Unprocessable(exc.errors, error_code=exc.code)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body(413, "The request body is too large."), status=413)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is away (restarting, failing over): nothing was done, and trying again soon will work.
        log.warning("API request failed on the database: %s", exc)
        body = error_body(503, "The service is briefly unavailable; try again in a few seconds.")
        return Response(body, status=503, headers={"Retry-After": str(DATABASE_RETRY_AFTER)})
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(NOT_FOUND_MESSAGE)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        message = "; ".join(
            f"{field}: {reason}" if field else reason for field, reasons in errors.items() for reason in reasons
        )
        extra = {"error_code": exc.error_code} if getattr(exc, "error_code", None) else {}
        return Response(error_body(422, message, errors=errors, **extra), status=status.HTTP_422_UNPROCESSABLE_ENTITY)
    if isinstance(exc, exceptions.APIException):
        code = exc.status_code
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            code = status.HTTP_401_UNAUTHORIZED
            message = "Unable to authenticate you."
        elif isinstance(exc, exceptions.NotFound):
            message = NOT_FOUND_MESSAGE
        else:
            message = str(exc.detail) if not isinstance(exc.detail, (list, dict)) else exc.default_detail
        headers = {}
        if code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response(error_body(code, str(message)), status=code, headers=headers)

    log.exception("unhandled API error in %s", context.get("view").__class__.__name__)
    return Response(error_body(500, "Unexpected server error."), status=500)


class BodySizeLimitMiddleware:
    """Refuse a request body over DATA_UPLOAD_MAX_MEMORY_SIZE before anything reads it.

    Django checks the limit only when `request.body` is read; DRF's parsers read the stream
    directly, so the API needs the check here.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.conf import settings

        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit:
            return JsonResponse(error_body(413, f"The request body is larger than {limit} bytes."), status=413)
        return self.get_response(request)


def json_not_found(request, exception=None):
    """handler404 for API paths; pages keep Django's own."""
    if request.path.startswith("/v2/"):
        return JsonResponse(error_body(404, NOT_FOUND_MESSAGE), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_server_error(request):
    if request.path.startswith("/v2/"):
        return JsonResponse(error_body(500, "Unexpected server error."), status=500)
    from django.views.defaults import server_error

    return server_error(request)


class PageNumberLinksPagination(PageNumberPagination):
    """DigitalOcean's pagination: `page`/`per_page`, `links.pages` and `meta.total`."""

    page_size = 20
    page_size_query_param = "per_page"
    max_page_size = 200

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param) or 1
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise Unprocessable({"page": ["must be a positive integer"]}) from None
        if number < 1:
            raise Unprocessable({"page": ["must be a positive integer"]})
        return number

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw in (None, ""):
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            raise Unprocessable({"per_page": ["must be an integer from 1 to 200"]}) from None
        if not 1 <= size <= self.max_page_size:
            raise Unprocessable({"per_page": ["must be an integer from 1 to 200"]})
        return size

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        page_size = self.get_page_size(request)
        paginator = self.django_paginator_class(queryset, page_size)
        number = self.get_page_number(request, paginator)
        # Past the last page: an empty list, as DigitalOcean answers, not a 404.
        self.total = paginator.count
        self.num_pages = paginator.num_pages
        self.number = number
        if number > paginator.num_pages:
            return []
        self.page = paginator.page(number)
        return list(self.page)

    def get_paginated_response(self, data, key: str = "results"):
        pages = {}
        url = self.request.build_absolute_uri()
        if self.number > 1:
            pages["first"] = replace_query_param(url, self.page_query_param, 1)
            pages["prev"] = replace_query_param(url, self.page_query_param, min(self.number - 1, self.num_pages))
        if self.number < self.num_pages:
            pages["next"] = replace_query_param(url, self.page_query_param, self.number + 1)
            pages["last"] = replace_query_param(url, self.page_query_param, self.num_pages)
        links = {"pages": pages} if pages else {}
        return Response({key: data, "links": links, "meta": {"total": self.total}})


def request_team(request) -> Team:
    """The team of the authenticated API token."""
    return request.auth.team


def json_object(request) -> dict:
    """The request body as a JSON object (an empty body reads as {}), or a 422."""
    data = request.data
    if data in (None, "") or (hasattr(data, "dict") and not data):
        return {}
    if not isinstance(data, dict):
        raise Unprocessable({"": ["the request body must be a JSON object"]})
    return data


def timestamp(value) -> str | None:
    """An aware datetime as DigitalOcean writes it: ISO 8601 in UTC with a Z."""
    return value.isoformat().replace("+00:00", "Z") if value else None


class StrictJSONParser(parsers.JSONParser):
    """JSON that can be stored: refuse (400) nesting too deep to parse and lone surrogates (\\ud800),
    which are valid JSON but not text any database or PEM parser takes."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise exceptions.ParseError(
                "JSON parse error - a string holds a lone surrogate (not Unicode text)"
            ) from None
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None
        return data
