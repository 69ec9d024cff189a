"""The passport's QR codes as a pure state machine on a fake clock (no HTTP)."""

from __future__ import annotations

from uploader.sim.passport import QR_TTL_SECONDS, QrLogins


def test_simulated_phone_and_expiry_on_a_fake_clock() -> None:
    now = [1000.0]
    passport = QrLogins(clock=lambda: now[0])
    session = passport.new_session()
    code = session.auth_code
    assert passport.phone(code, "confirm", {})[0] == 409  # confirm needs a scan first
    assert passport.phone(code, "scan", {}) == (200, "")
    assert passport.phone(code, "scan", {})[0] == 409
    now[0] += QR_TTL_SECONDS
    assert passport.current(code).state == "expired"
    assert passport.phone(code, "confirm", {})[0] == 409
    assert passport.phone("nope", "scan", {})[0] == 404


def test_a_confirmed_code_is_used_up_by_its_login() -> None:
    now = [1000.0]
    logins = QrLogins(clock=lambda: now[0])
    code = logins.new_session().auth_code
    logins.phone(code, "scan", {})
    assert logins.phone(code, "confirm", {"uname": "tester"}) == (200, "")
    session = logins.current(code)
    login = logins.take_login(session)
    assert login.mid == 20_001 and logins.uname(login.mid) == "tester"
    assert session.state == "used" and session.issued["SESSDATA"] == login.sessdata
    assert logins.phone(code, "scan", {})[0] == 409  # nothing more to do with a used code
    now[0] += QR_TTL_SECONDS
    assert logins.current(code).state == "used"  # used, not expired: the poll says 86038 either way
