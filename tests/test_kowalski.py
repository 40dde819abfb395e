"""tails.kowalski against a loopback Kowalski, through the real penquins client."""

from __future__ import annotations

import datetime as dt

import pytest

from tails.config import load_config
from tails.kowalski import (
    KowalskiError,
    fileroots_for_night,
    fileroots_query,
    jd_from_datetime,
    make_kowalski,
    night_window,
    parse_fileroots,
    query_fileroots,
)

from kowalski_server import KowalskiServer, ztf_ops_document

# 2019-10-14 00:00 UTC is JD 2458770.5
JD0 = 2458770.5


@pytest.fixture
def server():
    docs = [
        ztf_ops_document("ztf_20191014495961_000570_zr", JD0 + 0.495961, "Twilight survey"),
        ztf_ops_document("ztf_20191014200000_000400_zg", JD0 + 0.2, "MSIP all-sky"),
        ztf_ops_document("ztf_20191014100000_000401_zr", JD0 + 0.1, "Twilight: evening"),
        ztf_ops_document("ztf_20191013900000_000402_zr", JD0 - 0.1, "Twilight survey"),
        ztf_ops_document("ztf_20191015100000_000403_zr", JD0 + 1.1, "Twilight survey"),
    ]
    with KowalskiServer(docs) as s:
        yield s


def _config(server, **override):
    config = load_config()
    config["kowalski"] = server.config_section()
    config["kowalski"].update(override)
    return config


def test_jd_from_datetime():
    assert jd_from_datetime(dt.datetime(2019, 10, 14)) == pytest.approx(JD0)
    assert night_window("20191014") == (pytest.approx(JD0), pytest.approx(JD0 + 1))
    with pytest.raises(ValueError, match="YYYYMMDD"):
        night_window("2019-10-14")


def test_query_is_the_documented_one():
    q = fileroots_query(1.0, 2.0, twilight=True)
    assert q == {
        "query_type": "find",
        "query": {
            "catalog": "ZTF_ops",
            "filter": {"jd_start": {"$gt": 1.0, "$lt": 2.0}, "qcomment": {"$regex": "Twilight"}},
            "projection": {"_id": 0, "fileroot": 1},
        },
    }
    assert "qcomment" not in fileroots_query(1.0, 2.0)["query"]["filter"]
    with pytest.raises(ValueError, match="empty"):
        fileroots_query(2.0, 1.0)


def test_parse_fileroots_shapes_and_errors():
    answer = {"status": "success", "data": [{"fileroot": "b"}, {"fileroot": "a"}, {"fileroot": "a"}]}
    assert parse_fileroots(answer) == ["a", "b"]
    assert parse_fileroots({"default": answer}) == ["a", "b"]  # penquins >= 2.3
    with pytest.raises(KowalskiError, match="failed"):
        parse_fileroots({"status": "error", "message": "nope"})


def test_query_fileroots_through_penquins(server):
    k = make_kowalski(_config(server))
    assert k.ping()
    roots = query_fileroots(k, JD0, JD0 + 1, twilight=False)
    assert roots == [
        "ztf_20191014100000_000401_zr",
        "ztf_20191014200000_000400_zg",
        "ztf_20191014495961_000570_zr",
    ]
    twilight = query_fileroots(k, JD0, JD0 + 1, twilight=True)
    assert twilight == ["ztf_20191014100000_000401_zr", "ztf_20191014495961_000570_zr"]
    sent = server.queries[-1]
    assert sent["query"]["filter"]["qcomment"] == {"$regex": "Twilight"}
    assert sent["query"]["projection"] == {"_id": 0, "fileroot": 1}


def test_fileroots_for_night_with_username_password(server):
    config = _config(server, token="", username="tails", password="secret")
    assert fileroots_for_night(config, "20191014", twilight=True) == [
        "ztf_20191014100000_000401_zr",
        "ztf_20191014495961_000570_zr",
    ]


def test_bad_credentials_and_unreachable(server):
    with pytest.raises(KowalskiError, match="credentials"):
        make_kowalski(_config(server, token=""))
    with pytest.raises(KowalskiError, match="cannot connect"):
        make_kowalski(_config(server, token="", username="tails", password="wrong"))
    port = server.port
    server.stop()
    cfg = load_config()
    cfg["kowalski"].update(protocol="http", host="127.0.0.1", port=port, token="t", timeout=1)
    with pytest.raises(KowalskiError):
        make_kowalski(cfg)
