"""tails.fritz against a loopback SkyPortal that checks the bodies of ZTF.md."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import random
import re

import numpy as np
import pytest

from tails.config import load_config
from tails.fritz import (
    FritzClient,
    FritzError,
    annotation_data,
    make_object_id,
    posting_plan,
    thumbnail_png,
)

from skyportal_server import SkyPortalServer

DETECTION = {
    "id": "ztf_20191014495961_000570_zr_c05_o_q3",
    "ni": np.int64(0),
    "jd": 2458771.0,
    "datestr": "2019 10 14.99",
    "p": np.float32(0.97),
    "x": 558.2,
    "y": 2639.4,
    "ra": 122.3,
    "dec": 23.4,
    "radecstr": "08h09m12s +23d24m00s",
    "tails_v": "tails-test",
}
SCI = "https://irsa/sci/2019/1014/495961/ztf_20191014495961_000570_zr_c05_o_q3_sciimg.fits"
DIFF = SCI.replace("sciimg.fits", "scimrefdiffimg.fits.fz")
MPC_OK = {"status": "success", "data": [{"designation": "(434) Hungaria", "offset__arcsec": 12.3, "orbit": "21o"}]}
SKYBOT_DOWN = {"status": "error", "message": "SkyBot unreachable: connection refused"}


@pytest.fixture
def server():
    with SkyPortalServer() as s:
        yield s


def _client(server, **kw):
    config = load_config()
    config["fritz"] = server.config_section()
    config["fritz"].update(kw)
    return FritzClient.from_config(config), config


def _plan(obj_id, cutouts=True):
    rng = np.random.default_rng(1)
    c = {k: rng.normal(100, 5, (63, 63)).astype(np.float32) for k in ("sci", "ref", "diff")}
    c["ref"][0, 0] = np.nan
    return posting_plan(
        obj_id,
        DETECTION,
        cutouts=c if cutouts else None,
        triplet_png=thumbnail_png(c["sci"]),
        crossmatch={"MPC": MPC_OK, "IMCCE": SKYBOT_DOWN},
        sci_url=SCI,
        diff_url=DIFF,
        filter_id=1,
        group_id=1,
        origin="tails:twilight",
    )


def test_object_id_format():
    oid = make_object_id(dt.datetime(2020, 11, 14, tzinfo=dt.timezone.utc), random.Random(0))
    assert re.fullmatch(r"ZTF20201114_[a-z0-9]{6}", oid)
    assert make_object_id() != make_object_id()


def test_thumbnail_is_63x63_png_with_bone_colours():
    from PIL import Image

    img = np.random.default_rng(0).normal(0, 1, (63, 63))
    img[5, 5] = np.nan
    img[6, 6] = 1e30
    png = thumbnail_png(img)
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.size == (63, 63)
    rgb = np.asarray(im.convert("RGB")).astype(int)
    # bone is a blue-tinted grey: blue >= red everywhere
    assert (rgb[..., 2] >= rgb[..., 0]).all()
    with pytest.raises(ValueError, match="2-D"):
        thumbnail_png(np.zeros((3, 3, 3)))


def test_annotation_records_service_errors():
    data = annotation_data(DETECTION, SCI, DIFF, {"MPC": MPC_OK, "IMCCE": SKYBOT_DOWN})
    assert data["mpc_nearest_id"] == "(434) Hungaria"
    assert data["mpc_nearest_offset_arcsec"] == 12.3
    assert "connection refused" in data["imcce_nearest_error"]
    assert data["candid"] == "ztf_20191014495961_000570_zr_c05_o_q3_0"
    json.dumps(data)  # numpy scalars were converted


def test_full_posting_is_accepted(server):
    client, _ = _client(server)
    assert client.check_connection()
    oid = make_object_id()
    plan = _plan(oid)
    assert [s.name for s in plan] == [
        "candidate", "annotation", "thumbnail:new", "thumbnail:ref", "thumbnail:sub",
        "comment:triplet", "comment:crossmatch", "comment:link",
    ]
    for step in plan:
        client.send(step)
    assert server.invalid == []
    assert [p["kind"] for p in server.posts] == ["candidate", "annotation"] + ["thumbnail"] * 3 + ["comment"] * 3
    cand = server.posts_to("candidate")[0]["body"]
    assert cand["id"] == oid and cand["filter_ids"] == [1] and cand["score"] == pytest.approx(0.97)
    comments = server.posts_to("comment")
    xmatch = json.loads(base64.b64decode(comments[1]["body"]["attachment"]["body"]))
    assert xmatch["MPC"][0]["designation"] == "(434) Hungaria"
    assert "error" in xmatch["IMCCE"]
    assert SCI in comments[2]["body"]["text"]
    # what the sentinel asks after a crash
    for step in plan:
        assert client.step_done(oid, step)
    missing = make_object_id()
    assert not client.candidate_exists(missing)
    assert not client.step_done(missing, plan[2])  # its thumbnails: none
    assert server.invalid == []  # asking after what is not there is no broken contract


def test_retries_on_500_then_success(server):
    client, _ = _client(server)
    server.fail_next(3)
    oid = make_object_id()
    client.send(_plan(oid, cutouts=False)[0])
    assert len(server.failed) == 3
    assert len(server.posts_to("candidate")) == 1


def test_gives_up_after_retries_with_a_clear_error(server):
    client, _ = _client(server, retries=2)
    server.fail_next(10)
    with pytest.raises(FritzError, match="HTTP 500"):
        client.send(_plan(make_object_id(), cutouts=False)[0])
    assert len(server.failed) == 3  # the first try and 2 retries
    assert server.posts == []


def test_bad_token_and_unknown_object(server):
    client, _ = _client(server, token="wrong")
    assert not client.check_connection()
    client, _ = _client(server)
    with pytest.raises(FritzError, match="no such object"):
        client.send(_plan("ZTF20200101_aaaaaa")[1])
    assert server.invalid and server.posts == []


def test_session_follows_ztf_md():
    """ZTF.md: token header, 5 retries with backoff factor 2 on 405/429/5xx (POST too), 5 s."""
    client = FritzClient.from_config(load_config())
    assert client.session.headers["Authorization"].startswith("token ")
    for prefix in ("http://", "https://"):
        adapter = client.session.adapters[prefix]
        retry = adapter.max_retries
        assert retry.total == 5 and retry.backoff_factor == 2
        assert {405, 429, 500, 502, 503, 504} <= set(retry.status_forcelist)
        assert "POST" in retry.allowed_methods
        assert adapter.timeout == 5
