"""One JSON error shape for every failure the API answers: {"error": {...}}."""

from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        field: str | None = None,
        code: str = "",
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.field = field
        self.code = code
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)

    def to_dict(self) -> dict:
        body = {"status": self.status_code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.code:
            body["code"] = self.code
        return {"error": body}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = jsonify(exc.to_dict())
        response.status_code = exc.status_code
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        limit = app.config.get("MAX_CONTENT_LENGTH")
        error = ApiError(413, f"request body larger than the limit of {limit} bytes")
        return jsonify(error.to_dict()), 413

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        error = ApiError(exc.code or 500, exc.description or exc.name)
        return jsonify(error.to_dict()), error.status_code

    @app.errorhandler(redis.RedisError)
    def _redis_down(exc: redis.RedisError):
        log.error("run store unreachable: %s", exc)
        error = ApiError(503, "the run store (Redis) is unreachable; try again shortly")
        return jsonify(error.to_dict()), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # Never a stack trace to the caller; the service log keeps it.
        log.exception("unhandled error")
        error = ApiError(500, "internal error; the service log has the details")
        return jsonify(error.to_dict()), 500
