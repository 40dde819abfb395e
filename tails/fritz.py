"""Fritz (a SkyPortal instance): post Tails candidates with their annotations, thumbnails and comments.

The endpoints and request bodies are those of the original sentinel (ZTF.md, "Fritz"):

* ``GET  /api/sysinfo`` -- connection check;
* ``POST /api/candidates`` -- ``{id, ra, dec, score, filter_ids, origin, passed_at}``;
* ``POST /api/sources/{id}/annotations`` -- ``{origin, data, group_ids}``;
* ``POST /api/thumbnail`` -- ``{obj_id, data, ttype}`` for ``ttype`` new, ref and sub;
* ``POST /api/sources/{id}/comments`` -- ``{text, group_ids, attachment: {body, name}}``, three times:
  the 256 x 256 triplet PNG, the MPC and IMCCE cross-matches as JSON, the link to the IRSA image.

Each request carries ``Authorization: token <token>``; the session retries 5 times with a backoff
factor of 2 on HTTP 405, 429 and 5xx -- POST included -- and times out after 5 s (ZTF.md).

The request bodies are built by pure functions (:func:`candidate_body`, :func:`annotation_body`,
:func:`posting_plan`, ...), so that the sentinel can post them one step at a time and record each
step in its ledger; :class:`FritzClient` only sends them.  The ``GET`` helpers
(:meth:`FritzClient.candidate_exists` and friends) let the sentinel check whether a post whose
outcome it did not see (a crash in mid-request) reached Fritz, instead of posting it again.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import math
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

__all__ = [
    "FritzError",
    "FritzClient",
    "TimeoutHTTPAdapter",
    "RETRY_STATUS",
    "THUMBNAIL_TYPES",
    "PostStep",
    "make_object_id",
    "thumbnail_png",
    "candidate_body",
    "annotation_data",
    "annotation_body",
    "thumbnail_body",
    "comment_bodies",
    "posting_plan",
    "jsonable",
    "read_png",
]

log = logging.getLogger(__name__)

#: HTTP codes retried by the session (ZTF.md, "Fritz": 405/429/5xx).
RETRY_STATUS = (405, 429, 500, 502, 503, 504)

#: Thumbnail types and the cutout each is made from (ZTF.md: ttype new|ref|sub).
THUMBNAIL_TYPES = {"new": "sci", "ref": "ref", "sub": "diff"}

#: The object id alphabet and length (ZTF.md: ``ZTF`` + YYYYMMDD + ``_`` + 6 of a-z0-9).
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 6


class FritzError(RuntimeError):
    """Fritz could not be reached, or answered a request with an error."""


class TimeoutHTTPAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` with a default time-out for every request it sends."""

    def __init__(self, *args: Any, timeout: float = 5.0, **kwargs: Any):
        self.timeout = timeout
        super().__init__(*args, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


# -- pure helpers ----------------------------------------------------------------------------
def make_object_id(now: dt.datetime | None = None, rng: Any = None) -> str:
    """A new Fritz object id, ``ZTF`` + YYYYMMDD (UTC) + ``_`` + 6 characters of a-z0-9.

    Parameters
    ----------
    now : datetime, optional
        The date to use (default: now, UTC), as the original sentinel does.
    rng : random.Random-like, optional
        Something with ``choice``; default :mod:`secrets`.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    pick = (rng or secrets).choice
    return f"ZTF{now:%Y%m%d}_" + "".join(pick(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python ones, NaN and inf into None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def thumbnail_png(cutout: np.ndarray) -> bytes:
    """A PNG of a cutout, zscaled, with the bone colormap, one pixel per pixel (63 x 63).

    NaNs and absurd values (``|x| > 1e20``) are replaced by the median, as the original does.
    """
    from astropy.visualization import ZScaleInterval
    from matplotlib import image as mimage

    img = np.array(cutout, dtype=np.float64)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"a thumbnail needs a 2-D cutout, got shape {img.shape}")
    with np.errstate(invalid="ignore"):
        img[np.abs(img) > 1e20] = np.nan
    finite = np.isfinite(img)
    fill = float(np.median(img[finite])) if finite.any() else 0.0
    img[~finite] = fill
    vmin, vmax = ZScaleInterval(n_samples=img.size).get_limits(img)
    if not vmax > vmin:
        vmin, vmax = vmin - 1.0, vmin + 1.0
    buffer = io.BytesIO()
    # imsave colour-maps with PIL and no pyplot state, so it is safe in worker threads.
    mimage.imsave(buffer, img, cmap="bone", vmin=vmin, vmax=vmax, origin="upper", format="png")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def candidate_body(
    obj_id: str, detection: Mapping[str, Any], filter_id: int, passed_at: str | None = None
) -> dict:
    """``POST /api/candidates`` body (ZTF.md).  Its ``origin`` is the candidate's id
    ``{frame}_{ni}``, as in the original sentinel."""
    if passed_at is None:
        passed_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return jsonable(
        {
            "id": obj_id,
            "ra": float(detection["ra"]),
            "dec": float(detection["dec"]),
            "score": float(detection["p"]),
            "filter_ids": [int(filter_id)],
            "origin": f"{detection['id']}_{detection['ni']}",
            "passed_at": passed_at,
        }
    )


def _nearest(result: Mapping[str, Any] | None) -> tuple[dict | None, str | None]:
    """(nearest match, error message) of one cross-match result."""
    if not result:
        return None, "not queried"
    if result.get("status") != "success":
        return None, str(result.get("message") or "service error")
    data = result.get("data") or []
    return (dict(data[0]) if data else None), None


def annotation_data(
    detection: Mapping[str, Any],
    sci_url: str,
    diff_url: str,
    crossmatch: Mapping[str, Any] | None = None,
) -> dict:
    """The ``data`` of the Tails annotation: the detection, the IRSA URLs and the nearest known
    solar-system objects.

    ``crossmatch`` is ``{"MPC": result, "IMCCE": result}`` from :mod:`tails.crossmatch`.  A service
    that failed is recorded as ``mpc_nearest_error`` / ``imcce_nearest_error`` with its message.
    """
    data: dict[str, Any] = {
        "candid": f"{detection['id']}_{detection['ni']}",
        "score": detection["p"],
        "jd": detection["jd"],
        "datestr": detection["datestr"],
        "x": detection["x"],
        "y": detection["y"],
        "ra": detection["ra"],
        "dec": detection["dec"],
        "radecstr": detection["radecstr"],
        "tails_v": detection["tails_v"],
        "sci_ipac_url": sci_url,
        "dif_ipac_url": diff_url,
    }
    crossmatch = crossmatch or {}
    mpc, err = _nearest(crossmatch.get("MPC"))
    if err:
        data["mpc_nearest_error"] = err
    elif mpc:
        data["mpc_nearest_id"] = mpc.get("designation")
        data["mpc_nearest_offset_arcsec"] = mpc.get("offset__arcsec")
        data["mpc_nearest_orbit"] = mpc.get("orbit")
    imcce, err = _nearest(crossmatch.get("IMCCE"))
    if err:
        data["imcce_nearest_error"] = err
    elif imcce:
        data["imcce_nearest_id"] = str(imcce.get("Name"))
        data["imcce_nearest_offset_arcsec"] = imcce.get("centerdist")
        data["imcce_nearest_Vmag"] = imcce.get("V")
    return jsonable(data)


def annotation_body(obj_id: str, data: Mapping[str, Any], origin: str, group_id: int) -> dict:
    """``POST /api/sources/{obj_id}/annotations`` body (ZTF.md)."""
    return jsonable({"obj_id": obj_id, "origin": origin, "data": data, "group_ids": [int(group_id)]})


def thumbnail_body(obj_id: str, cutout: np.ndarray, ttype: str) -> dict:
    """``POST /api/thumbnail`` body: the 63 x 63 cutout as a zscaled bone PNG (ZTF.md)."""
    if ttype not in THUMBNAIL_TYPES:
        raise ValueError(f"thumbnail type must be one of {', '.join(THUMBNAIL_TYPES)}, got {ttype!r}")
    return {"obj_id": obj_id, "data": _b64(thumbnail_png(cutout)), "ttype": ttype}


def comment_bodies(
    obj_id: str,
    candid: str,
    group_id: int,
    triplet_png: bytes | None,
    crossmatch: Mapping[str, Any] | None,
    sci_url: str,
) -> list[tuple[str, dict]]:
    """The three comments of a candidate, as ``(name, body)`` (ZTF.md):

    1. ``triplet``: the 256 x 256 triplet PNG as an attachment;
    2. ``crossmatch``: the MPC and IMCCE matches as a JSON attachment (``null`` for a service with
       no match; ``{"error": message}`` for a service that failed);
    3. ``link``: a link to the science image at IRSA.
    """
    out: list[tuple[str, dict]] = []
    if triplet_png is not None:
        out.append(
            (
                "triplet",
                {
                    "obj_id": obj_id,
                    "text": "Full-sized cutouts (256x256 px)",
                    "group_ids": [int(group_id)],
                    "attachment": {"body": _b64(triplet_png), "name": f"{candid}.png"},
                },
            )
        )
    matches: dict[str, Any] = {}
    for key in ("MPC", "IMCCE"):
        result = (crossmatch or {}).get(key)
        if result and result.get("status") == "success":
            matches[key] = result.get("data") or None
        else:
            matches[key] = {"error": (result or {}).get("message", "not queried")}
    out.append(
        (
            "crossmatch",
            {
                "obj_id": obj_id,
                "text": "MPC and IMCCE cross-match",
                "group_ids": [int(group_id)],
                "attachment": {
                    "body": _b64(json.dumps(jsonable(matches)).encode()),
                    "name": f"{candid}.json",
                },
            },
        )
    )
    out.append(
        (
            "link",
            {
                "obj_id": obj_id,
                "text": f"[SCI image from IPAC]({sci_url})",
                "group_ids": [int(group_id)],
            },
        )
    )
    return out


@dataclass(frozen=True)
class PostStep:
    """One request of a candidate's posting: its name (unique per candidate), method, endpoint
    and JSON body."""

    name: str
    method: str
    endpoint: str
    body: dict


def posting_plan(
    obj_id: str,
    detection: Mapping[str, Any],
    *,
    cutouts: Mapping[str, np.ndarray] | None,
    triplet_png: bytes | None,
    crossmatch: Mapping[str, Any] | None,
    sci_url: str,
    diff_url: str,
    filter_id: int,
    group_id: int,
    origin: str,
    passed_at: str | None = None,
) -> list[PostStep]:
    """Every request that posts one candidate, in order: candidate, annotation, thumbnails
    new/ref/sub, comments triplet/crossmatch/link.

    Parameters
    ----------
    obj_id : str
        The candidate's Fritz object id (:func:`make_object_id`).
    detection : mapping
        One row of ``FrameResult.detections`` (``id, ni, jd, datestr, p, x, y, ra, dec,
        radecstr, tails_v``).
    cutouts : mapping
        ``{"sci", "ref", "diff"}`` -> 63 x 63 arrays; thumbnails are skipped when None.
    triplet_png : bytes
        The 256 x 256 triplet PNG written by the pipeline (skipped when None).
    crossmatch : mapping
        ``{"MPC": ..., "IMCCE": ...}`` results of :mod:`tails.crossmatch`.
    sci_url, diff_url : str
        IRSA URLs of the science and difference images.
    filter_id, group_id : int
        Fritz filter and group.
    origin : str
        Origin of the annotation (e.g. ``tails:twilight``).
    """
    candid = f"{detection['id']}_{detection['ni']}"
    steps = [
        PostStep("candidate", "POST", "/api/candidates", candidate_body(obj_id, detection, filter_id, passed_at)),
        PostStep(
            "annotation",
            "POST",
            f"/api/sources/{obj_id}/annotations",
            annotation_body(obj_id, annotation_data(detection, sci_url, diff_url, crossmatch), origin, group_id),
        ),
    ]
    if cutouts is not None:
        for ttype, key in THUMBNAIL_TYPES.items():
            steps.append(
                PostStep(f"thumbnail:{ttype}", "POST", "/api/thumbnail", thumbnail_body(obj_id, cutouts[key], ttype))
            )
    for name, body in comment_bodies(obj_id, candid, group_id, triplet_png, crossmatch, sci_url):
        steps.append(PostStep(f"comment:{name}", "POST", f"/api/sources/{obj_id}/comments", body))
    return steps


# -- the client ------------------------------------------------------------------------------
class FritzClient:
    """A SkyPortal API session with the original sentinel's retries and time-out.

    Parameters
    ----------
    base_url : str
        ``protocol://host:port`` of the Fritz instance.
    token : str
        API token, sent as ``Authorization: token <token>``.
    timeout : float
        Seconds per request (ZTF.md: 5).
    retries : int
        Retries on 405/429/5xx and connection errors, POST included (ZTF.md: 5).
    backoff_factor : float
        urllib3 backoff factor (ZTF.md: 2; sleeps 0, 4, 8, 16, 32 s).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = 5.0,
        retries: int = 5,
        backoff_factor: float = 2.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers.update({"Authorization": f"token {token}"})
        retry = Retry(
            total=int(retries),
            backoff_factor=float(backoff_factor),
            status_forcelist=RETRY_STATUS,
            allowed_methods=["HEAD", "GET", "PUT", "POST", "PATCH", "DELETE"],
            raise_on_status=False,
        )
        adapter = TimeoutHTTPAdapter(timeout=float(timeout), max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "FritzClient":
        """A client from the ``fritz`` section of the configuration."""
        f = config["fritz"]
        return cls(
            base_url=f"{f['protocol']}://{f['host']}:{f['port']}",
            token=f["token"],
            timeout=f["timeout"],
            retries=f["retries"],
            backoff_factor=f["backoff_factor"],
        )

    def close(self) -> None:
        self.session.close()

    def api(self, method: str, endpoint: str, data: Mapping[str, Any] | None = None) -> dict:
        """Call an endpoint and return its JSON answer when ``status`` is ``success``.

        Raises
        ------
        FritzError
            On a connection failure after the retries, a non-JSON answer, an HTTP error, or
            ``{"status": "error"}``; the message holds the endpoint and Fritz's message.
        """
        method = method.upper()
        if method not in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"):
            raise ValueError(f"unsupported HTTP method {method!r}")
        url = f"{self.base_url}/{endpoint.lstrip('/')}"
        kwargs: dict[str, Any] = {"params": data} if method == "GET" else {"json": data}
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.RequestException as e:
            raise FritzError(f"{method} {endpoint}: Fritz unreachable at {self.base_url}: {e}") from e
        try:
            answer = response.json()
        except ValueError:
            raise FritzError(
                f"{method} {endpoint}: HTTP {response.status_code}, answer is not JSON: {response.text[:200]!r}"
            ) from None
        if response.status_code >= 400 or not isinstance(answer, dict) or answer.get("status") != "success":
            message = answer.get("message", answer) if isinstance(answer, dict) else answer
            raise FritzError(f"{method} {endpoint}: HTTP {response.status_code}: {message}")
        return answer

    # -- endpoints -------------------------------------------------------------------------
    def sysinfo(self) -> dict:
        """``GET /api/sysinfo``, the connection check."""
        return self.api("GET", "/api/sysinfo")

    def check_connection(self) -> bool:
        """True when ``/api/sysinfo`` answers with success; logs the reason otherwise."""
        try:
            self.sysinfo()
            return True
        except FritzError as e:
            log.warning("Fritz connection check failed: %s", e)
            return False

    def post_candidate(self, body: Mapping[str, Any]) -> dict:
        return self.api("POST", "/api/candidates", body)

    def post_annotation(self, obj_id: str, body: Mapping[str, Any]) -> dict:
        return self.api("POST", f"/api/sources/{obj_id}/annotations", body)

    def post_thumbnail(self, body: Mapping[str, Any]) -> dict:
        return self.api("POST", "/api/thumbnail", body)

    def post_comment(self, obj_id: str, body: Mapping[str, Any]) -> dict:
        return self.api("POST", f"/api/sources/{obj_id}/comments", body)

    def send(self, step: PostStep) -> dict:
        """Send one step of a :func:`posting_plan`."""
        return self.api(step.method, step.endpoint, step.body)

    # -- checks for posts whose outcome was not seen ---------------------------------------
    def _get_or_none(self, endpoint: str) -> Any:
        try:
            return self.api("GET", endpoint).get("data")
        except FritzError as e:
            if "HTTP 400" in str(e) or "HTTP 404" in str(e):
                return None
            raise

    def candidate_exists(self, obj_id: str) -> bool:
        """Whether ``GET /api/candidates/{obj_id}`` finds the candidate."""
        return self._get_or_none(f"/api/candidates/{obj_id}") is not None

    def step_done(self, obj_id: str, step: PostStep) -> bool:
        """Whether a step reached Fritz, judged from what Fritz holds for ``obj_id``.

        Used only for a step whose request was sent but whose answer was never recorded.

        Raises
        ------
        FritzError
            If Fritz cannot be asked (then the caller must not decide).
        """
        if step.name == "candidate":
            return self.candidate_exists(obj_id)
        if step.name == "annotation":
            data = self._get_or_none(f"/api/sources/{obj_id}/annotations") or []
            return any(a.get("origin") == step.body.get("origin") for a in _records(data))
        if step.name.startswith("comment:"):
            data = self._get_or_none(f"/api/sources/{obj_id}/comments") or []
            return any(c.get("text") == step.body.get("text") for c in _records(data))
        if step.name.startswith("thumbnail:"):
            cand = self._get_or_none(f"/api/candidates/{obj_id}") or {}
            thumbs = cand.get("thumbnails", []) if isinstance(cand, dict) else []
            return any(t.get("type") == step.body.get("ttype") for t in _records(thumbs))
        raise ValueError(f"unknown posting step {step.name!r}")


def _records(data: Any) -> Iterable[Mapping[str, Any]]:
    return [d for d in data if isinstance(d, Mapping)] if isinstance(data, Sequence) else []


def read_png(path: str | Path | None) -> bytes | None:
    """The bytes of a PNG file, or None when there is no path or file."""
    if path is None:
        return None
    p = Path(path)
    return p.read_bytes() if p.is_file() else None
