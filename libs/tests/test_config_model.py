"""GatewayConfig and its YAML form: defaults, validation messages with paths, hostile documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgw_libs.config.document import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    ConfigError,
    content_hash,
    load_file,
    load_text,
    parse_yaml,
    to_yaml,
)
from mailgw_libs.config.model import GatewayConfig, is_set, shipped_defaults
from mailgw_libs.config.rulesystem import RuleSystemConfig
from mailgw_libs.config.versions import VersionLog, new_version

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "config" / "gateway.example.yaml"
SHA512_CRYPT = "$6$q2Vu9fLrExample$lKeiQse33I06/0eJWRPbGj7mC8VonkQ.GfbK0G10FKYfgiqfiA261OGmfnCQlH2Nj0zWedqlJdqsXa7yDtyH9/"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return str(info.value)


def test_defaults_equal_the_services_environment_defaults() -> None:
    config = shipped_defaults()
    assert config.relay_domains == ["example.com"]
    assert config.trusted_networks == ["127.0.0.1/32", "::1/128"]
    assert config.ingress.greylisting.enabled and config.ingress.greylisting.delay_s == 180
    assert config.ingress.greylisting.retry_window_s == 2 * 86400 and config.ingress.greylisting.whitelist_s == 36 * 86400
    assert config.ingress.rate_limits.max_connections_per_ip == 50
    assert config.ingress.max_message_bytes == 25 * 1024 * 1024
    assert config.scoring.bayes.enabled is False  # PMG: use_bayes 0
    assert config.scoring.failure_policy == {"antivirus": "tempfail", "antispam": "ignore", "ocr": "ignore"}
    assert config.quarantine.lifetimes.spam_days == 7 and config.quarantine.spam_report.at == "00:05"
    assert isinstance(config.rules, RuleSystemConfig)


def test_an_empty_document_is_the_shipped_defaults() -> None:
    assert load_text("") == shipped_defaults()
    assert load_text("{}\n") == shipped_defaults()


def test_the_shipped_example_is_valid_and_round_trips() -> None:
    config = load_file(EXAMPLE)
    assert config.transports["example.org"].protocol == "lmtp"
    assert config.ingress.recipient_verification.ldap_profile == "corp"
    again = load_text(to_yaml(config))
    assert again == config and content_hash(again) == content_hash(config)


def test_unquoted_off_is_the_off_mode() -> None:
    assert load_text("ingress: {recipient_verification: {mode: off}}").ingress.recipient_verification.mode == "off"


def test_the_documented_example_is_the_shipped_example() -> None:
    docs = (REPO / "docs" / "configuration.md").read_text()
    block = docs.split("## Full example", 1)[1].split("```yaml\n", 1)[1].split("```\n", 1)[0]
    assert block == EXAMPLE.read_text()
    assert load_text(block) == load_file(EXAMPLE)


def test_static_recipients_may_be_addresses_or_catch_all_domains() -> None:
    config = load_text("ingress: {recipient_verification: {mode: static, "
                       "addresses: [Bob@Example.COM, '@Sales.Example.com.', '@bücher.example']}}")
    assert config.ingress.recipient_verification.addresses == [
        "Bob@example.com", "@sales.example.com", "@xn--bcher-kva.example"]


@pytest.mark.parametrize("entry", [
    "'@'", "'@@example.com'", "'@a@example.com'", "'@bad domain.com'", "'@-x.com'", "'bob@'", "'bob'",
    "'a@b@c.com'", "'@" + "a" * 400 + ".com'", '"@exa\\x00mple.com"', "'<bob@example.com>'", '"@example.com\\r\\nX-Evil: 1"'])
def test_bad_static_recipient_entries_are_refused(entry: str) -> None:
    message = error_of(f"ingress: {{recipient_verification: {{mode: static, addresses: [{entry}]}}}}")
    assert "ingress.recipient_verification.addresses[0]" in message


def test_names_are_normalised() -> None:
    config = load_text("relay_domains: [Example.COM., bücher.example]\ntrusted_networks: ['2001:DB8::/32']\n")
    assert config.relay_domains == ["example.com", "xn--bcher-kva.example"]
    assert config.trusted_networks == ["2001:db8::/32"]


@pytest.mark.parametrize(("text", "expected"), [
    ("trusted_networks: [10.0.0.1/8]", "trusted_networks[0]: '10.0.0.1/8' has host bits set: did you mean 10.0.0.0/8?"),
    ("trusted_networks: [10.0.0.0/33]", "trusted_networks[0]: not an IP network"),
    ("relay_domains: ['bad domain.com']", "relay_domains[0]: not a valid domain name"),
    ("relay_domains: [a.com, A.com]", "relay domain 'a.com' is listed twice"),
    ("ingress: {dnsbl: {sites: [{zone: zen.spamhaus.org, weight: heavy}]}}",
     "ingress.dnsbl.sites[0].weight: Input should be a valid integer"),
    ("ingress: {dnsbl: {sites: [{zone: zen.spamhaus.org, answers: [10.0.0.2]}]}}", "127.x.y.z"),
    ("ingress: {greylisting: {delay_s: -1}}", "ingress.greylisting.delay_s: Input should be greater than or equal to 0"),
    ("ingress: {greylist: {}}", "ingress.greylist: Extra inputs are not permitted"),
    ("default_transport: {protocol: uucp}", "default_transport.protocol: Input should be 'smtp' or 'lmtp'"),
    ("default_transport: {tls: dane}", "default_transport.tls: Input should be 'none', 'may', 'encrypt' or 'verify'"),
    ("default_transport: {port: 70000}", "default_transport.port: Input should be less than or equal to 65535"),
    ("outbound: {mode: smarthost}", "outbound: mode 'smarthost' needs a smarthost"),
    ("ingress: {recipient_verification: {mode: ldap, ldap_profile: corp}}",
     "ingress.recipient_verification.ldap_profile: unknown LDAP profile 'corp'"),
    ("ingress: {welcomelist: ['not an entry!']}", "ingress.welcomelist[0]: expected an IP address, a network"),
    ("scoring: {failure_policy: {antivirus: explode}}", "scoring.failure_policy.antivirus: Input should be"),
    ("scoring: {failure_policy: {clamav: tempfail}}", "scoring.failure_policy.clamav (the key): Input should be"),
    ("scoring: {symbol_scores: {lower_case: 1}}", "scoring.symbol_scores.lower_case (the key): String should match"),
    ("scoring: {bayes: {autolearn_ham_below: 5, autolearn_spam_from: 1}}", "scoring.bayes: autolearn_ham_below must be lower"),
    ("admins: [{name: root, password_hash: hunter2}]", "admins[0].password_hash: expected a password hash"),
    ("admins: [{name: root, password_hash: '" + SHA512_CRYPT + "'}, {name: root, password_hash: '" + SHA512_CRYPT + "'}]",
     "admin user 'root' is listed twice"),
    ("ldap_profiles: {corp: {servers: ['http://dc1'], base_dn: 'dc=example'}}", "expected ldap://host[:port]"),
    ("ldap_profiles: {corp: {servers: ['ldap://dc1'], base_dn: 'example'}}", "not a distinguished name"),
    ("ldap_profiles: {corp: {servers: ['ldap://dc1'], base_dn: 'dc=x', user_filter: '(uid=*'}}", "not an LDAP filter"),
    ("ldap_profiles: {corp: {servers: ['ldap://dc1'], base_dn: 'dc=x', bind_dn: 'cn=a,dc=x'}}", "bind_dn needs password_env"),
    ("ldap_profiles: {corp: {servers: ['ldap://dc1'], base_dn: 'dc=x', bind_dn: 'cn=a,dc=x', password_env: 's3cret!'}}",
     "not the secret itself"),
    ("quarantine: {spam_report: {at: 10:30}}", "write the time quoted"),
    ("quarantine: {spam_report: {at: '25:00'}}", "expected a time 'HH:MM'"),
    ("quarantine: {spam_report: {timezone: Mars/Olympus}}", "unknown time zone 'Mars/Olympus'"),
    ("schema_version: 2", "schema_version: Input should be 1"),
    ("relay_domains: example.com", "relay_domains: Input should be a valid list"),
    ("ingress: {spf: [yes]}", "ingress.spf: Input should be a valid boolean"),
    ("notifications: {admin_address: 'root'}", "notifications.admin_address: expected an e-mail address"),
    ("rules: {who: {S: {objects: [{type: ldap_group, profile: corp, group: staff}]}}}",
     "rules.who: ldap_user/ldap_group objects name unknown LDAP profile(s) ['corp'] (ldap_profiles: none defined)"),
    ("rules: {actions: {N: {objects: [{type: notify, to: [admin], template: virus-alert}]}}}",
     "rules.actions: notify actions name unknown template(s) ['virus-alert'] (notifications.templates: none defined)"),
])
def test_invalid_documents_are_refused_naming_the_path(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_rules_may_name_defined_ldap_profiles_and_templates() -> None:
    config = load_text("""
ldap_profiles: {corp: {servers: ['ldap://dc1'], base_dn: 'dc=x'}}
notifications: {templates: {virus-alert: {subject: 'Virus __VIRUS_INFO__', body: 'from __SENDER__'}}}
rules:
  who: {Staff: {objects: [{type: ldap_group, profile: corp, group: staff}, {type: ldap_user, profile: corp}]}}
  actions: {N: {objects: [{type: notify, to: [admin], template: virus-alert}]}}
  rules: [{name: R, priority: 1, to: [Staff], actions: [N]}]
""")
    assert config.rules.ldap_profiles_used() == {"corp"}
    assert config.rules.notification_templates_used() == {"virus-alert"}


def test_is_set_tells_given_values_from_shipped_defaults() -> None:
    # Services with an environment setting for the same value use it only while the configuration does not give it.
    assert not is_set(shipped_defaults().scoring, "scorers")
    published = load_text(to_yaml(shipped_defaults()))  # what a version holds: every field written out
    assert is_set(published.scoring, "scorers") and is_set(published.scoring, "deadline_s")
    partial = load_text("scoring: {deadline_s: 5}")
    assert is_set(partial.scoring, "deadline_s") and not is_set(partial.scoring, "scorers")


def test_every_error_is_reported_not_only_the_first() -> None:
    message = error_of("relay_domains: ['a b']\ntrusted_networks: [x]\ndefault_transport: {port: 0}\n")
    assert len(message.splitlines()) == 3


def test_unknown_sections_are_errors() -> None:
    assert "relay_domain: Extra inputs are not permitted" in error_of("relay_domain: [example.com]")


@pytest.mark.parametrize(("text", "expected"), [
    ("a: &x [1, 2]\nb: *x\n", "anchors and aliases"),
    ("relay_domains: [a.com]\nrelay_domains: [b.com]\n", "line 2, column 1: duplicate key 'relay_domains'"),
    ("ingress:\n  spf: true\n  spf: false\n", "duplicate key 'spf'"),
    ("? [a, b]\n: 1\n", "mapping keys must be plain scalars"),
    ("x: !!python/object/apply:os.system [echo hi]\n", "could not determine a constructor"),
    ("relay_domains: [a.com\n", "YAML:"),
    ("- just\n- a list\n", "must be a mapping of sections"),
    ("'a string'", "must be a mapping of sections"),
    ("ingress: {max_recipients: " + "9" * 5000 + "}", "YAML value"),
])
def test_hostile_or_broken_yaml_is_refused(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_billion_laughs_is_refused_before_expansion() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join(['*a' + str(i - 1)] * 9)}]" for i in range(1, 10)]
    with pytest.raises(ConfigError, match="anchors and aliases"):
        parse_yaml("\n".join(lines))


def test_deep_nesting_is_refused() -> None:
    # libyaml stops flow collections at 1000 levels while scanning ahead; either way the document is refused.
    assert "nest" in error_of("x: " + "[" * 10_000 + "]" * 10_000)
    assert f"nested deeper than {MAX_DEPTH}" in error_of("x: " + "[" * 100 + "]" * 100)
    assert f"nested deeper than {MAX_DEPTH}" in error_of("".join(f"{' ' * i}k{i}:\n" for i in range(200)))


def test_huge_documents_are_refused() -> None:
    big = "relay_domains:\n" + "  - a.example\n" * (MAX_DOCUMENT_BYTES // 14 + 1)
    assert "larger than" in error_of(big)


def test_a_large_valid_document_loads() -> None:
    domains = "".join(f"  - d{i}.example.com\n" for i in range(20_000))
    networks = "".join(f"  - 10.{i // 256}.{i % 256}.0/24\n" for i in range(5_000))
    config = load_text(f"relay_domains:\n{domains}trusted_networks:\n{networks}")
    assert len(config.relay_domains) == 20_000 and len(config.trusted_networks) == 5_000


def test_too_many_list_entries_are_refused_before_validating_them() -> None:
    entries = "".join(f"  - 10.{i // 256 % 256}.{i % 256}.0/24\n" for i in range(10_001))
    assert error_of(f"trusted_networks:\n{entries}") == "trusted_networks has 10001 entries, at most 10000 are allowed"


def test_binary_and_non_utf8_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_text(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        load_text(b"relay_domains: [\x00]")


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_file(tmp_path / "absent.yaml")


def test_the_model_is_frozen() -> None:
    config = GatewayConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.relay_domains = []


def test_the_fold_ignores_hostile_records_without_failing() -> None:
    versions = VersionLog(keep_history=True)
    good = new_version(load_text("relay_domains: [a.example]"), 1, "alice", "")
    deep = b'{"version": 2, "writer_id": "w", "created_at": "2026-01-01T00:00:00Z", "sha256": "' + b"0" * 64 + \
        b'", "content": {"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}"
    records: list[tuple[bytes | None, bytes | None]] = [
        (good.key.encode(), good.model_dump_json().encode()),
        (b"version/0000000002/w", deep),
        (b"version/0000000002/w", None),
        (None, b"{}"),
        (b"\xff\xfe", b"\xff"),
        (b"version/0000000002/w", b'{"version": 99999999999999999999999999999}'),
        (b"version/0000000002/w", b'{"version": -1, "writer_id": "w"}'),
    ]
    for offset, (key, value) in enumerate(records):
        versions.add(offset, key, value)
    assert versions.version == 1 and versions.sequence == 1 and len(versions.ignored) == len(records) - 1
    assert versions.current_config is not None and versions.current_config.relay_domains == ["a.example"]
