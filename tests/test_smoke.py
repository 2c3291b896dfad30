from mailprime.domain.address import Address


def test_address_parse_normalises_domain() -> None:
    a = Address.parse("<Bob@Example.COM>")
    assert a.local == "Bob"
    assert a.domain == "example.com"
    assert a.key == "bob@example.com"
