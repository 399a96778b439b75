"""Target guard: blocked addresses are rejected before any connection is opened."""

import ipaddress
import socket

import pytest

from backend.webhooks import guard


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("169.254.10.10", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("240.0.0.1", "a private address"),
        ("100.64.0.1", "not a globally routable address"),
    ],
)
def test_address_block_reason_blocked(address, reason):
    assert guard.address_block_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_address_block_reason_public(address):
    assert guard.address_block_reason(ipaddress.ip_address(address)) is None


@pytest.fixture
def no_resolution(monkeypatch):
    """Fail the test if the guard resolves a name."""

    def fail(hostname, port):
        raise AssertionError(f"resolved {hostname}")

    monkeypatch.setattr(guard, "resolve_host", fail)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com/hook", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("http://user:pw@example.com/hook", "credentials in the URL"),
        ("http://example.com:99999/hook", "is invalid"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata host"),
    ],
)
def test_check_url_rejects_without_resolving(url, expected, no_resolution):
    with pytest.raises(guard.TargetError) as excinfo:
        guard.check_url(url)

    assert url in str(excinfo.value)
    assert expected in str(excinfo.value)


def test_check_url_localhost_rejected():
    # localhost resolves from /etc/hosts, so this sends no DNS query.
    with pytest.raises(guard.TargetError) as excinfo:
        guard.check_url("http://localhost:8000/hook")

    assert "localhost resolves to" in str(excinfo.value)
    assert "a loopback address" in str(excinfo.value)
    assert "VERSUS_WEBHOOK_ALLOWED_HOSTS" in str(excinfo.value)


def test_check_url_any_blocked_address_rejects(monkeypatch):
    monkeypatch.setattr(guard, "resolve_host", lambda host, port: ["93.184.215.14", "10.1.2.3"])

    with pytest.raises(guard.TargetError, match=r"resolves to 10\.1\.2\.3, a private address"):
        guard.check_url("https://hooks.example.com/in")


def test_check_url_pins_first_address(monkeypatch):
    monkeypatch.setattr(guard, "resolve_host", lambda host, port: ["93.184.215.14", "93.184.215.15"])

    target = guard.check_url("https://Hooks.Example.com./in")

    assert target == guard.Target(
        scheme="https", hostname="hooks.example.com", port=443, address="93.184.215.14",
    )


def test_check_url_allowed_host(settings):
    settings.VERSUS_WEBHOOK_ALLOWED_HOSTS = ["LOCALHOST"]

    target = guard.check_url("http://localhost:8000/hook")

    assert target.hostname == "localhost"
    assert target.port == 8000
    assert ipaddress.ip_address(target.address).is_loopback


def test_check_url_allowed_ip_literal(settings):
    settings.VERSUS_WEBHOOK_ALLOWED_HOSTS = ["[::1]", "10.0.0.1"]

    assert guard.check_url("http://[::1]:9/").address == "::1"
    assert guard.check_url("http://10.0.0.1/").address == "10.0.0.1"


def test_check_url_unresolvable_host(monkeypatch):
    def not_found(hostname, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(guard, "resolve_host", not_found)

    with pytest.raises(guard.TargetError, match="does not resolve"):
        guard.check_url("http://receiver.invalid/hook")
