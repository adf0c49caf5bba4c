from mailgw_ingress.access import AccessList

LIST = AccessList.parse(["192.0.2.7", "198.51.100.0/24", "2001:db8::/32", "Bad@Spam.example", "spam.test",
                         "@other.test", ".evil.test", "  ", "ignored-not-an-ip/99"])


def test_clients_by_ip_and_network() -> None:
    assert LIST.client_listed("192.0.2.7")
    assert not LIST.client_listed("192.0.2.8")
    assert LIST.client_listed("198.51.100.250")
    assert LIST.client_listed("::ffff:198.51.100.1")
    assert LIST.client_listed("2001:db8:5::1")
    assert not LIST.client_listed("garbage")


def test_senders_by_address_domain_and_subdomains() -> None:
    assert LIST.sender_listed("bad@spam.example")
    assert LIST.sender_listed("BAD@SPAM.EXAMPLE.")
    assert not LIST.sender_listed("good@spam.example")
    assert LIST.sender_listed("anyone@spam.test")
    assert not LIST.sender_listed("anyone@sub.spam.test")  # exact domain entry
    assert LIST.sender_listed("x@other.test")
    assert LIST.sender_listed("x@evil.test") and LIST.sender_listed("x@a.b.evil.test")
    assert not LIST.sender_listed("x@notevil.test")
    assert not LIST.sender_listed("") and not LIST.sender_listed("no-at-sign")


def test_listed_combines_client_and_sender() -> None:
    assert LIST.listed("192.0.2.7", None)
    assert LIST.listed("203.0.113.1", "x@spam.test")
    assert not LIST.listed("203.0.113.1", "x@fine.test")
    assert not AccessList.parse([])
