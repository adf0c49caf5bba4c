"""Validated scalar types of the configuration model: domains, addresses, hosts, secret references.

Each type rejects what an administrator could get wrong (a typo'd network, a password pasted where a
reference belongs) with a message that says what was expected; the YAML path is added by the caller.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

# RFC 1035 limits: 63 per label, 253 for the name. Underscores are allowed: service labels such as
# `_dmarc` and DNSBL zones like `zen.spamhaus.org` live next to ordinary host names.
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# Password hashes in crypt(3)/PHC string form: what admin logins are checked against, never the password.
_PASSWORD_HASH = re.compile(
    r"^(\$argon2(id|i|d)\$[A-Za-z0-9=,$+/.-]{20,400}"
    r"|\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"
    r"|\$[56]\$(rounds=\d{1,9}\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}"
    r"|\$pbkdf2-sha(256|512)\$\d{1,9}\$[A-Za-z0-9+/.=]{8,200}\$[A-Za-z0-9+/.=]{16,400}"
    r"|\$scrypt\$[A-Za-z0-9=,$+/.-]{20,400})$"
)


class Section(BaseModel):
    """Base of every configuration section: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _bounded_collections(cls, data: Any) -> Any:
        """Refuse an oversized list or mapping before its items are validated (pydantic checks max_length
        only afterwards, and validating a million addresses costs seconds)."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is None or not isinstance(value, list | dict):
                    continue
                limit = next((m.max_length for m in field.metadata if getattr(m, "max_length", None) is not None), None)
                if limit is not None and len(value) > limit:
                    raise ValueError(f"{name} has {len(value)} entries, at most {limit} are allowed")
        return data


def _domain(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if not name or len(name) > 253:
        raise ValueError("expected a domain name (1 to 253 characters)")
    try:
        # IDNs are stored as their ASCII form, which is what appears in SMTP envelopes and DNS.
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a valid domain name: {value!r}") from exc
    labels = name.split(".")
    if any(not _LABEL.match(label) for label in labels):
        raise ValueError(f"not a valid domain name: {value!r}")
    return name


def check_host(value: str) -> str:
    """A host name or an IP literal (a relay, a smarthost, an LDAP server)."""
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return _domain(text)


def _address(value: str) -> str:
    text = value.strip()
    if len(text) > 320 or text.count("@") != 1:
        raise ValueError(f"expected an e-mail address local@domain: {value!r}")
    local, domain = text.rsplit("@", 1)
    if not _LOCAL_PART.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError(f"not a valid e-mail address: {value!r}")
    return f"{local}@{_domain(domain)}"


def _recipient_entry(value: str) -> str:
    """A recipient address, or `@domain`: every address of that domain (a catch-all)."""
    text = value.strip()
    if text.startswith("@"):
        if "@" in text[1:]:
            raise ValueError(f"expected local@domain or @domain: {value!r}")
        return "@" + _domain(text[1:])
    return _address(text)


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            "expected the NAME of an environment variable holding the secret (A-Z, 0-9, _), "
            "not the secret itself: secrets are never stored in the configuration"
        )
    return value


def _password_hash(value: str) -> str:
    if not _PASSWORD_HASH.match(value):
        raise ValueError(
            "expected a password hash ($argon2id$..., $2b$..., $6$..., $pbkdf2-sha256$..., $scrypt$...), "
            "never a clear-text password"
        )
    return value


def _network(value: str) -> str:
    text = value.strip()
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"not an IP network (address/prefix, e.g. 192.0.2.0/24): {value!r}") from exc
        raise ValueError(f"{value!r} has host bits set: did you mean {loose}?") from exc


def _smtp_list_entry(value: str) -> str:
    """An SMTP welcome/blocklist entry: IP, network, sender address, or sender domain (`.domain` = and subdomains)."""
    text = value.strip()
    try:
        return str(ipaddress.ip_network(text, strict=False)) if "/" in text else str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if "@" in text:
        return _address(text)
    if text.startswith("."):
        return "." + _domain(text[1:])
    try:
        return _domain(text)
    except ValueError:
        raise ValueError(f"expected an IP address, a network, a sender address or a sender domain: {value!r}") from None


DomainName = Annotated[str, StringConstraints(max_length=260), AfterValidator(_domain)]
HostName = Annotated[str, StringConstraints(max_length=260), AfterValidator(check_host)]
EmailAddress = Annotated[str, StringConstraints(max_length=330), AfterValidator(_address)]
# Recipient verification entries: `local@domain`, or `@domain` for a domain's catch-all.
RecipientEntry = Annotated[str, StringConstraints(max_length=330), AfterValidator(_recipient_entry)]
EnvVarName = Annotated[str, StringConstraints(max_length=128), AfterValidator(_env_name)]
PasswordHash = Annotated[str, StringConstraints(max_length=512), AfterValidator(_password_hash)]
Network = Annotated[str, StringConstraints(max_length=50), AfterValidator(_network)]
SmtpListEntry = Annotated[str, StringConstraints(max_length=330), AfterValidator(_smtp_list_entry)]
# Names of things an administrator refers to elsewhere (LDAP profiles, templates, admin users).
Name = Annotated[str, StringConstraints(pattern=_NAME.pattern)]
Port = Annotated[int, Field(ge=1, le=65535)]
# Symbols are UPPER_SNAKE everywhere (docs: conventions).
SymbolName = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,127}$")]
# tesseract traineddata names: eng, deu, chi_sim.
OcrLanguage = Annotated[str, StringConstraints(pattern=r"^[a-z]{3}(_[a-z]{2,8})?$")]
