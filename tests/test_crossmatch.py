"""tails.crossmatch against loopback MPChecker and SkyBoT."""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy.coordinates import SkyCoord
from astropy.time import Time

from tails.config import load_config
from tails.crossmatch import (
    MPChecker,
    SkyBot,
    crossmatch,
    mpchecker_form,
    parse_mpchecker,
    parse_skybot,
    skybot_params,
)

from crossmatch_servers import KnownObject, MPCheckerServer, SkyBotServer

RA, DEC = 122.30, 23.40
JD = 2458771.0
OBJECTS = [
    KnownObject("(434) Hungaria", RA + 30 / 3600, DEC - 20 / 3600, v=15.3, number=434),
    KnownObject("2019 AB1", RA - 70 / 3600, DEC + 10 / 3600, v=20.1),
    KnownObject("C/2019 Q4 (Borisov)", RA + 1.0, DEC, v=16.0, kind="Comet", orbit="3c"),  # far away
]


@pytest.fixture
def servers():
    with MPCheckerServer(OBJECTS) as mpc, SkyBotServer(OBJECTS) as sb:
        yield mpc, sb


def _clients(mpc, sb):
    config = load_config()
    config["crossmatch"].update(mpc_url=mpc.url, skybot_url=sb.url, timeout=5)
    return MPChecker.from_config(config), SkyBot.from_config(config)


def test_forms_match_the_services():
    c = SkyCoord(ra=RA, dec=-DEC, unit="deg")
    t = Time("2019-10-14T12:00:00", scale="utc")
    form = mpchecker_form(c, t)
    assert form["ra"] == "08 09 12.000" and form["decl"] == "-23 24 00.00"
    assert form["day"] == "14.5000" and form["month"] == "10" and form["year"] == "2019"
    assert (form["radius"], form["limit"], form["oc"], form["which"]) == ("2", "24", "I41", "pos")
    p = skybot_params(c, t)
    assert p["-rd"] == pytest.approx(2 / 60) and p["-loc"] == "I41" and p["-mime"] == "votable"
    assert float(p["-ep"]) == pytest.approx(t.jd)


def test_skybot_params_are_astroquerys():
    import astropy.units as u
    from astroquery.imcce import Skybot

    c = SkyCoord(ra=RA, dec=DEC, unit="deg")
    t = Time(JD, format="jd")
    theirs = Skybot.cone_search_async(c, 2 * u.arcmin, t, location="I41", get_query_payload=True)
    ours = skybot_params(c, t)
    assert set(theirs) == set(ours)
    for k in ours:
        if isinstance(ours[k], float):
            assert float(theirs[k]) == pytest.approx(ours[k])
        else:
            assert str(theirs[k]) == ours[k]


def test_queries_find_the_near_objects(servers):
    mpc_server, sb_server = servers
    mpc, sb = _clients(mpc_server, sb_server)
    result = crossmatch(RA, DEC, JD, mpc, sb)
    assert mpc_server.invalid == [] and sb_server.invalid == []
    m = result["MPC"]
    assert m["status"] == "success"
    assert [r["designation"] for r in m["data"]] == ["(434) Hungaria", "2019 AB1"]
    assert m["data"][0]["offset__arcsec"] == pytest.approx(34.0, abs=1.0)
    assert m["data"][0]["v"] == 15.3 and m["data"][0]["orbit"] == "21o"
    assert m["data"][0]["motion_dec__arcsec_per_h"] == -20
    s = result["IMCCE"]
    assert s["status"] == "success"
    assert [r["Name"] for r in s["data"]] == ["(434) Hungaria", "2019 AB1"]
    assert s["data"][0]["Number"] == 434 and s["data"][1]["Number"] is None
    assert s["data"][0]["centerdist"] == pytest.approx(34.0, abs=1.0)
    assert s["data"][0]["RA"] == pytest.approx(RA + 30 / 3600, abs=1e-4)


def test_empty_fields(servers):
    mpc, sb = _clients(*servers)
    result = crossmatch(RA + 90, DEC, JD, mpc, sb)
    assert result == {"MPC": {"status": "success", "data": []}, "IMCCE": {"status": "success", "data": []}}


def test_services_down_are_errors_not_exceptions(servers):
    mpc_server, sb_server = servers
    mpc, sb = _clients(mpc_server, sb_server)
    mpc_server.down = True
    sb_url = sb.url
    sb_server.stop()
    result = crossmatch(RA, DEC, JD, mpc, sb)
    assert result["MPC"]["status"] == "error" and "503" in result["MPC"]["message"]
    assert result["IMCCE"]["status"] == "error" and "unreachable" in result["IMCCE"]["message"]
    assert sb_url in result["IMCCE"]["message"]
    assert crossmatch(RA, DEC, JD, None, None)["MPC"]["message"] == "not configured"


def test_parse_real_skybot_votable():
    """The VOTable that astroquery's own tests hold, recorded from the real service."""
    import astroquery.imcce

    path = Path(astroquery.imcce.__file__).parent / "tests" / "data" / "skybot_query.vot"
    if not path.is_file():
        pytest.skip("astroquery's test data is not installed")
    rows = parse_skybot(path.read_bytes())
    assert len(rows) >= 1
    assert {"Name", "Number", "RA", "DEC", "V", "centerdist"} <= set(rows[0])
    assert isinstance(rows[0]["RA"], float)
    assert rows == sorted(rows, key=lambda r: r["centerdist"])


def test_parse_mpchecker_without_table():
    assert parse_mpchecker("<html><body>No known minor planets</body></html>") == []
