"""The dashboard: pages for a browser, served by the API itself from templates and static
files in the package (the charting library kept in static/vendor, nothing from a CDN).

The pages are shells: their script (static/dashboard.js) reads the same HTTP API the CLI
uses, with the session cookie instead of a bearer token, so the tenant rules, audit and rate
limits are those of the API. Signing in exchanges a token for a session (common/sessions.py):
the cookie is HttpOnly and SameSite=Strict, the token never goes in a URL nor back to a page,
and every request that changes something carries the session's CSRF token (api/auth.py).

A page is not part of the API (no @contract: tests/api/test_openapi.py leaves the `ui`
blueprint out); a signed-out visitor is sent to sign in, and another user's run or experiment
answers the same 404 page as a missing one."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from api.auth import CSRF_HEADER, SESSION_COOKIE
from api.services import current_services
from common.ids import is_experiment_id, is_run_id
from common.sessions import Session
from common.tokens import Principal, TokensFileError, hash_token

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
root_bp = Blueprint("ui_root", __name__)


@root_bp.get("/")
def home():
    return redirect(url_for("ui.runs"))


def _signed_in() -> tuple[Session, Principal] | None:
    services = current_services()
    session = services.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
    if session is None:
        return None
    principal = services.tokens.resolve_hash(session.token_hash)
    return None if principal is None else (session, principal)


def _page(template: str, owned=None, **context) -> Response:
    """The page for the signed-in visitor; a signed-out one goes to sign in (and back).
    `owned`: (find, missing) for the page of a run or experiment (`find()` reads it): another
    user's answers the 404 page, exactly like a missing one, as the API does."""
    found = _signed_in()
    if found is None:
        return redirect(url_for("ui.sign_in", next=request.full_path.rstrip("?")), 303)
    session, principal = found
    status = 200
    if owned is not None:
        find, missing = owned
        record = find()
        if record is None or (record.user != principal.user and not principal.admin):
            template, status, context = "missing.html", 404, {"what": missing}
    html = render_template(
        template,
        user=principal.user,
        admin=principal.admin,
        csrf=session.csrf,
        csrf_header=CSRF_HEADER,
        **context,
    )
    response = Response(html, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def runs():
    return _page("runs.html")


@bp.get("/runs/<run_id>")
def run(run_id: str):
    services = current_services()
    return _page(
        "run.html",
        owned=(
            lambda: services.runs.get(run_id) if is_run_id(run_id) else None,
            f"no training run {run_id!r}",
        ),
        run_id=run_id,
    )


MAX_COMPARED = 10


@bp.get("/compare")
def compare():
    """Runs side by side: `?runs=ID,ID,...` (the selection, in the address to share it). A run
    that is missing or another user's answers the 404 page naming it, as its own page does."""
    services = current_services()
    run_ids = [r for r in request.args.get("runs", "").split(",") if r]
    if not 2 <= len(set(run_ids)) <= MAX_COMPARED:
        return _page(
            "missing.html",
            owned=(lambda: None, f"compare: 2 to {MAX_COMPARED} runs, as ?runs=ID,ID,..."),
        )

    def first_missing():
        for run_id in run_ids:
            run = services.runs.get(run_id) if is_run_id(run_id) else None
            if run is None or not _visible(run.user):
                return run_id
        return None

    missing = first_missing()
    return _page(
        "compare.html",
        owned=(lambda: None, f"no training run {missing!r}") if missing else None,
        run_ids=",".join(dict.fromkeys(run_ids)),
    )


def _visible(owner: str) -> bool:
    found = _signed_in()
    return found is not None and (found[1].user == owner or found[1].admin)


@bp.get("/experiments/")
def experiments():
    return _page("experiments.html")


@bp.get("/experiments/<experiment_id>")
def experiment(experiment_id: str):
    services = current_services()
    return _page(
        "experiment.html",
        owned=(
            lambda: (
                services.experiments.get(experiment_id) if is_experiment_id(experiment_id) else None
            ),
            f"no experiment {experiment_id!r}",
        ),
        experiment_id=experiment_id,
    )


@bp.get("/fleet")
def fleet():
    return _page("fleet.html")


def _next_page() -> str:
    """Where to go after signing in: a dashboard path of this site only (no open redirect)."""
    target = request.values.get("next", "")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/"):
        return url_for("ui.runs")
    return target


@bp.get("/sign-in")
def sign_in():
    if _signed_in() is not None:
        return redirect(_next_page(), 303)
    return render_template("sign_in.html", next=_next_page(), error=None)


@bp.post("/sign-in")
def sign_in_post():
    """The token comes in the form's body (never the URL); the answer sets the cookie."""
    services = current_services()
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        abort(403)  # a sign-in form posted from another site (login CSRF)
    token = request.form.get("token", "").strip()
    try:
        principal = services.tokens.resolve(token) if token else None
    except TokensFileError:
        return _sign_in_again("the service cannot read its tokens file; try again later", 503)
    if principal is None:
        _audit("-", "session.refused")
        message = "token: enter your token" if not token else "token: not a valid token"
        return _sign_in_again(message, 400 if not token else 401)
    session_id, _ = services.sessions.create(principal.user, hash_token(token))
    _audit(principal.user, "session.sign_in")
    response = redirect(_next_page(), 303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=services.sessions.ttl_seconds,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    return response


def _audit(user: str, action: str) -> None:
    current_services().audit.record(user, action, user, request.remote_addr or "")


def _sign_in_again(error: str, status: int) -> tuple[str, int]:
    return render_template("sign_in.html", next=_next_page(), error=error), status


@bp.post("/sign-out")
def sign_out():
    """Ends the session; needs its CSRF token (the form's hidden field), like any change."""
    services = current_services()
    session_id = request.cookies.get(SESSION_COOKIE, "")
    session = services.sessions.get(session_id)
    if session is not None:
        if not session.csrf_matches(request.form.get("csrf", "")):
            abort(403)
        services.sessions.delete(session_id)
        _audit(session.user, "session.sign_out")
    response = redirect(url_for("ui.sign_in"), 303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response
