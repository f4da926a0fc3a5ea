"""A small HTTP client for the dlaas API, and where it finds the server and the token."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

DEFAULT_URL = "http://127.0.0.1:18080"
ENV_FILE = Path(".dlaas") / "env"
DOWNLOAD_CHUNK = 1 << 20


class ClientError(RuntimeError):
    """One line a person can act on."""


def read_env_file(path: Path) -> dict[str, str]:
    """`export NAME=VALUE` lines, as `make up` writes them."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            words = words[1:]
        for word in words:
            name, sep, value = word.partition("=")
            if sep:
                values[name] = value
    return values


def find_env_file(start: Path | None = None) -> Path | None:
    """`$DLAAS_HOME/env`, else `.dlaas/env` in the working directory or a parent, else
    beside this checkout."""
    home = os.environ.get("DLAAS_HOME")
    if home and (Path(home) / "env").is_file():
        return Path(home) / "env"
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[1]):
        if (folder / ENV_FILE).is_file():
            return folder / ENV_FILE
    return None


def resolve_target(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    env = os.environ if environ is None else environ
    url, token = env.get("DLAAS_URL", ""), env.get("DLAAS_TOKEN", "")
    if not (url and token):
        found = find_env_file()
        if found:
            saved = read_env_file(found)
            url = url or saved.get("DLAAS_URL", "")
            token = token or saved.get("DLAAS_TOKEN", "")
    return (url or DEFAULT_URL).rstrip("/"), token


class DlaasClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # the service is addressed directly, never via a proxy
        # A kept-alive connection the server closed meanwhile (gunicorn's keep-alive is 2 s, a
        # poll's pause may be as long): a GET (or PUT, DELETE) is sent once more on a new one.
        # POST and PATCH are never sent twice.
        again = HTTPAdapter(max_retries=Retry(total=1, status=0, raise_on_status=False))
        self.session.mount("http://", again)
        self.session.mount("https://", again)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs) -> dict:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            return {}

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.url + path, **kwargs)
        except requests.ConnectionError:
            raise ClientError(
                f"cannot reach the dlaas service at {self.url} (is it up? `make up`)"
            ) from None
        except requests.Timeout:
            raise ClientError(
                f"the dlaas service at {self.url} did not answer in {self.timeout:.0f} s"
            ) from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            error = body.get("error", {}) if isinstance(body, dict) else {}
            message = error.get("message") or response.reason
            raise ClientError(f"{message} (HTTP {response.status_code})")
        return response

    def submit(self, model_zip: Path, manifest: Path) -> dict:
        try:
            with open(model_zip, "rb") as zf, open(manifest, "rb") as mf:
                files = {
                    "model_definition": (Path(model_zip).name, zf, "application/zip"),
                    "manifest": (Path(manifest).name, mf, "application/x-yaml"),
                }
                return self._call("POST", "/v3/models", files=files)
        except OSError as exc:
            raise ClientError(f"{exc.filename}: {exc.strerror}") from None

    def submit_experiment(self, model_zip: Path, manifest: Path, experiment: Path) -> dict:
        try:
            with (
                open(model_zip, "rb") as zf,
                open(manifest, "rb") as mf,
                open(experiment, "rb") as ef,
            ):
                files = {
                    "model_definition": (Path(model_zip).name, zf, "application/zip"),
                    "manifest": (Path(manifest).name, mf, "application/x-yaml"),
                    "experiment": (Path(experiment).name, ef, "application/x-yaml"),
                }
                return self._call("POST", "/v3/experiments", files=files)
        except OSError as exc:
            raise ClientError(f"{exc.filename}: {exc.strerror}") from None

    def experiments(self, offset: int = 0, limit: int = 100) -> dict:
        """One page of the caller's experiments (newest first)."""
        return self._call("GET", "/v3/experiments", params={"offset": offset, "limit": limit})

    def experiment(self, experiment_id: str) -> dict:
        return self._call("GET", f"/v3/experiments/{experiment_id}")

    def cancel_experiment(self, experiment_id: str) -> dict:
        return self._call("PATCH", f"/v3/experiments/{experiment_id}", json={"status": "halt"})

    def delete_experiment(self, experiment_id: str) -> dict:
        return self._call("DELETE", f"/v3/experiments/{experiment_id}")

    def list(self, offset: int = 0, limit: int = 200, every_user: bool = False) -> dict:
        params = {"offset": offset, "limit": limit}
        if every_user:
            params["all"] = "true"
        return self._call("GET", "/v3/models", params=params)

    def list_all(self, every_user: bool = False) -> list[dict]:
        models: list[dict] = []
        offset: int | None = 0
        while offset is not None:
            page = self.list(offset, every_user=every_user)
            models.extend(page["models"])
            offset = page.get("next_offset")
        return models

    def show(self, run_id: str) -> dict:
        return self._call("GET", f"/v3/models/{run_id}")

    def delete(self, run_id: str) -> dict:
        return self._call("DELETE", f"/v3/models/{run_id}")

    def metrics(self, run_id: str, name: str | None = None, since: int = 0) -> dict:
        params = {"since": since, **({"name": name} if name else {})}
        return self._call("GET", f"/v3/models/{run_id}/metrics", params=params)

    def results(self, run_id: str) -> dict:
        """The files in the run's results folder: {files: [{path, size}], ...}."""
        return self._call("GET", f"/v3/models/{run_id}/results")

    def download(
        self, run_id: str, path: str, dest: Path, progress: Callable[[int], None] | None = None
    ) -> int:
        """One result file streamed to `dest` (through `dest.part`, renamed once whole); its
        size. `progress` hears each chunk's length."""
        url = f"/v3/models/{run_id}/results/{quote(path, safe='/')}"
        partial = dest.with_name(dest.name + ".part")
        written = 0
        try:
            with self._request("GET", url, stream=True) as response:
                expected = int(response.headers.get("Content-Length", -1))
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(partial, "wb") as out:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                        if progress:
                            progress(len(chunk))
            if expected >= 0 and written != expected:
                raise ClientError(
                    f"{path}: the transfer ended at {written} of {expected} bytes (try again)"
                )
            os.replace(partial, dest)
        except OSError as exc:
            raise ClientError(f"{exc.filename or dest}: {exc.strerror or exc}") from None
        except requests.RequestException as exc:
            raise ClientError(f"{path}: the transfer broke off: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)
        return written

    def logs(self, run_id: str, since: int = 0) -> tuple[str, int]:
        """The log from line `since`: (text, the next line number)."""
        response = self._request("GET", f"/v3/models/{run_id}/logs", params={"since": since})
        return response.text, int(response.headers.get("X-Next-Line", since))

    def follow(self, run_id: str, since: int = 0) -> Iterator[tuple[str, list[str]]]:
        """Server-sent events of a followed log: ("status"|"log"|"end", data lines)."""
        response = self._request(
            "GET",
            f"/v3/models/{run_id}/logs",
            params={"since": since, "follow": "true"},
            stream=True,
            timeout=(self.timeout, 120),
        )
        with response:
            kind, data = "message", []
            for raw in response.iter_lines(decode_unicode=True):
                if raw is None:
                    continue
                if raw == "":
                    if data or kind != "message":
                        yield kind, data
                    kind, data = "message", []
                elif raw.startswith("event: "):
                    kind = raw[7:]
                elif raw.startswith("data: "):
                    data.append(raw[6:])
                elif raw == "data:":
                    data.append("")

    def cancel(self, run_id: str) -> dict:
        return self._call("PATCH", f"/v3/models/{run_id}", json={"status": "halt"})

    def store_again(self, run_id: str) -> dict:
        return self._call("POST", f"/v3/models/{run_id}/store")

    def nodes(self) -> dict:
        return self._call("GET", "/v3/nodes")

    def frameworks(self) -> dict:
        return self._call("GET", "/v3/frameworks")

    def drain(self, name: str) -> dict:
        return self._call("POST", f"/v3/nodes/{name}/drain")

    def undrain(self, name: str) -> dict:
        return self._call("POST", f"/v3/nodes/{name}/undrain")

    def create_token(self, user: str, note: str = "") -> dict:
        return self._call("POST", "/v3/admin/tokens", json={"user": user, "note": note})

    def tokens(self) -> dict:
        return self._call("GET", "/v3/admin/tokens")

    def revoke_token(self, token_id: str) -> dict:
        return self._call("DELETE", f"/v3/admin/tokens/{token_id}")

    def rotate_key(self) -> dict:
        return self._call("POST", "/v3/admin/rotate-key")

    def audit(self, limit: int = 50, actor: str | None = None) -> dict:
        params = {"limit": limit, **({"actor": actor} if actor else {})}
        return self._call("GET", "/v3/admin/audit", params=params)

    def health(self) -> dict:
        return self._call("GET", "/health")
