"""Errors every app's services raise, mapped to HTTP once (certhub.api_common.exception_handler)."""


class Invalid(Exception):
    """Input that cannot be stored: `errors` maps each field to its reasons; `code`, when set, is a
    stable machine-readable reason (answered as `error_code`)."""

    code: str | None = None

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors
