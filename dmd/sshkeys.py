"""SSH public keys as people paste them: parsed (by asyncssh), checked, and brought to one
canonical authorized_keys line.

Accepted: one key, either an OpenSSH line (`type base64 [comment]`, as in a .pub file or an
authorized_keys file) or an RFC 4716 block (`---- BEGIN SSH2 PUBLIC KEY ----`). Types:
ed25519, ecdsa (nistp256/384/521), rsa of 2048 to 16384 bits, and the FIDO security-key
types sk-ssh-ed25519@openssh.com and sk-ecdsa-sha2-nistp256@openssh.com (OpenSSH 8.2+).

Options before the key (`no-pty,command="..." ssh-ed25519 ...`) are allowed in what is
pasted but dropped: DM writes the authorized_keys lines itself, and only the canonical
`type base64 [comment]` is kept. Everything else is refused with a ParseError saying why:
private keys, more than one key, line breaks or control characters, DSA, short RSA,
certificates, damaged or truncated key data, input over MAX_INPUT_BYTES.

The fingerprint is what `ssh-keygen -l` prints: "SHA256:" and the unpadded base64 of the
SHA-256 of the key blob.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

import asyncssh

MAX_INPUT_BYTES = 16 * 1024
MAX_COMMENT = 200
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384  # sshd refuses larger RSA keys

# Algorithm name -> the label `ssh-keygen -l` shows in brackets.
ACCEPTED: dict[str, str] = {
    "ssh-ed25519": "ED25519",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "ssh-rsa": "RSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}
_FIXED_BITS = {"ssh-ed25519": 256, "sk-ssh-ed25519@openssh.com": 256}

# Types we recognise but do not take, with the reason.
_REFUSED_TYPES: dict[str, str] = {
    "ssh-dss": "DSA keys are no longer accepted by OpenSSH; make an ed25519 key (ssh-keygen -t ed25519)",
    "ssh-ed448": "ed448 keys are not supported by OpenSSH; use an ed25519 key",
    "rsa-sha2-256": "rsa-sha2-256 is a signature algorithm, not a key type: the key line starts with ssh-rsa",
    "rsa-sha2-512": "rsa-sha2-512 is a signature algorithm, not a key type: the key line starts with ssh-rsa",
}

# Line breaks and other characters that must never be inside a key line.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# The armour of every private key format (PEM, OpenSSH, SSH2/ssh.com, PuTTY): the BEGIN or,
# when that was cut off, the END line. Upper case only, so a comment such as "private key" is fine.
_PRIVATE_RE = re.compile(r"(?:BEGIN|END) [A-Z0-9 ]*PRIVATE KEY|PuTTY-User-Key-File")
_B64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_OPTION_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_RFC_BEGIN = "---- BEGIN SSH2 PUBLIC KEY ----"
_RFC_END = "---- END SSH2 PUBLIC KEY ----"
_RFC_HEADER_RE = re.compile(r"^([\x21-\x39\x3b-\x7e]{1,64}):[ \t]*(.*)$")


class ParseError(ValueError):
    """Why a pasted key is refused: a stable code and a message for people."""

    def __init__(self, code: str, message: str, **params: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.params = params


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_type: str  # the algorithm name: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, ...
    blob: bytes  # the key in SSH wire format (what the fingerprint is taken of)
    bits: int
    comment: str  # normalised: printable, one line, at most MAX_COMMENT characters
    options_removed: tuple[str, ...] = ()  # names of the authorized_keys options that were dropped
    source_format: str = "openssh"  # or "rfc4716"

    @property
    def label(self) -> str:
        return ACCEPTED[self.key_type]

    @property
    def data(self) -> str:
        return base64.b64encode(self.blob).decode("ascii")

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.blob)

    @property
    def line(self) -> str:
        """The canonical authorized_keys line: type, base64 and the comment (if any), no options."""
        return f"{self.key_type} {self.data}" + (f" {self.comment}" if self.comment else "")


def fingerprint_of(blob: bytes) -> str:
    """As `ssh-keygen -l` prints it: SHA256: and unpadded base64."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def label_of(key_type: str) -> str:
    return ACCEPTED.get(key_type, key_type)


def looks_private(text: str) -> bool:
    """True when `text` holds (part of) a private key: never show it back to anyone."""
    return bool(_PRIVATE_RE.search(text))


# --- the parser ------------------------------------------------------------------------

def parse_public_key(text: str | bytes) -> ParsedKey:
    """One public key from what a user pasted or uploaded; raises ParseError."""
    if isinstance(text, bytes):
        if _PRIVATE_RE.search(text[: 4 * MAX_INPUT_BYTES].decode("latin-1")):
            raise _private()
        if len(text) > MAX_INPUT_BYTES:
            raise _too_large()
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("not_a_key", "this is not an SSH public key (the file is not text)") from None
    if _PRIVATE_RE.search(text[: 4 * MAX_INPUT_BYTES]):
        raise _private()
    if len(text) > MAX_INPUT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        raise _too_large()
    text = text.removeprefix("\ufeff").strip()
    if not text:
        raise ParseError("empty", "paste a public key, such as the contents of ~/.ssh/id_ed25519.pub")
    if text.startswith("---- BEGIN SSH2"):
        return _parse_rfc4716(text)
    if text.startswith("-----BEGIN"):
        raise ParseError(
            "unsupported_format",
            "PEM keys are not accepted: paste the key in OpenSSH format "
            "(convert it with: ssh-keygen -i -m PKCS8 -f key.pem)",
        )
    if any(c in _LINE_BREAKS for c in text):
        lines = [ln for ln in re.split(f"[{_LINE_BREAKS}]+", text) if ln.strip()]
        if sum(1 for ln in lines if _looks_like_key_line(ln)) > 1:
            raise _multiple()
        raise ParseError("line_break", "a key is one line: this one has line breaks inside it")
    _check_chars(text)
    return _parse_openssh_line(text)


def _private() -> ParseError:
    return ParseError(
        "private_key",
        "this is a private key: never share it. Paste the public key instead, the .pub file "
        "(for example ~/.ssh/id_ed25519.pub)",
    )


def _too_large() -> ParseError:
    return ParseError("too_large", f"this is too long for a public key (more than {MAX_INPUT_BYTES} bytes)",
                      max=MAX_INPUT_BYTES)


def _multiple() -> ParseError:
    return ParseError("multiple_keys", "this holds more than one key: add them one at a time")


def _damaged() -> ParseError:
    return ParseError("damaged", "the key data is incomplete or damaged; was it cut off when copied?")


def _not_a_key() -> ParseError:
    return ParseError(
        "not_a_key",
        "this is not an SSH public key: a key looks like 'ssh-ed25519 AAAAC3Nz… you@host'",
    )


def _bad_char(c: str) -> bool:
    o = ord(c)
    return (o < 32 and c != "\t") or 0x7F <= o < 0xA0 or c in _LINE_BREAKS or 0xD800 <= o < 0xE000


def _check_chars(line: str) -> None:
    if any(_bad_char(c) for c in line):
        raise ParseError("control_characters", "the key contains control characters (such as NUL) that are not "
                         "allowed")


def _is_key_type_token(token: str) -> bool:
    return token in ACCEPTED or token in _REFUSED_TYPES or _is_cert_type(token) or token.startswith("x509v3-")


def _is_cert_type(token: str) -> bool:
    return token.endswith("-cert-v01@openssh.com")


def _looks_like_key_line(line: str) -> bool:
    """A line holding a key type followed by key data (options before it or not)."""
    tokens = line.split()
    return any(_is_key_type_token(t) and i + 1 < len(tokens) and len(tokens[i + 1]) >= 40
               for i, t in enumerate(tokens))


def _skip_options(line: str) -> tuple[str, str]:
    """Split `options rest` the way sshd does: options end at the first blank outside quotes,
    where \\" inside quotes is an escaped quote."""
    quoted = False
    i = 0
    while i < len(line) and (quoted or line[i] not in " \t"):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == '"':
            i += 2
            continue
        if line[i] == '"':
            quoted = not quoted
        i += 1
    if quoted:
        raise ParseError("bad_options", "the options before the key have an unterminated quote")
    return line[:i], line[i:].lstrip(" \t")


def _option_names(options: str) -> tuple[str, ...]:
    names: list[str] = []
    part, quoted, i = "", False, 0
    parts: list[str] = []
    while i < len(options):
        c = options[i]
        if c == "\\" and i + 1 < len(options) and options[i + 1] == '"':
            part += c + options[i + 1]
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            parts.append(part)
            part = ""
        else:
            part += c
        i += 1
    parts.append(part)
    for p in parts:
        name = p.split("=", 1)[0].strip().lower()
        if not name:
            continue
        name = name if _OPTION_NAME_RE.match(name) else "?"
        if name not in names:
            names.append(name)
    return tuple(names[:20])


def _parse_openssh_line(line: str) -> ParsedKey:
    line = line.strip(" \t")
    options_removed: tuple[str, ...] = ()
    first = re.split(r"[ \t]", line, maxsplit=1)[0]
    if not _is_key_type_token(first):
        options, line = _skip_options(line)
        if not line:
            raise _not_a_key()
        options_removed = _option_names(options)
        first = re.split(r"[ \t]", line, maxsplit=1)[0]
        if not _is_key_type_token(first):
            raise _not_a_key()
    parts = re.split(r"[ \t]+", line, maxsplit=2)
    if len(parts) < 2:
        raise _damaged()
    key_type, data = parts[0], parts[1]
    comment = parts[2] if len(parts) > 2 else ""
    _check_type(key_type)
    blob = _decode_b64(data)
    if _looks_like_key_line(comment):
        raise _multiple()
    return _finish(key_type, blob, comment, options_removed, "openssh")


def _parse_rfc4716(text: str) -> ParsedKey:
    lines = [ln.rstrip(" \t") for ln in re.split(r"\r\n|\n|\r", text)]
    for ln in lines:
        _check_chars(ln)
    if lines[0] != _RFC_BEGIN:
        raise _not_a_key()
    try:
        end = lines.index(_RFC_END)
    except ValueError:
        raise ParseError("damaged", "the key has no '---- END SSH2 PUBLIC KEY ----' line; was it cut off?") from None
    rest = [ln for ln in lines[end + 1:] if ln.strip()]
    if rest:
        if any(ln.startswith("---- BEGIN") or _looks_like_key_line(ln) for ln in rest):
            raise _multiple()
        raise ParseError("trailing_garbage", "there is text after the end of the key")
    body = lines[1:end]
    comment = ""
    i = 0
    while i < len(body) and ":" in body[i]:
        m = _RFC_HEADER_RE.match(body[i])
        if not m:
            raise _damaged()
        tag, value = m.group(1), m.group(2)
        while value.endswith("\\"):  # a header continues on the next line
            i += 1
            if i >= len(body):
                raise _damaged()
            value = value[:-1] + body[i]
        if tag.lower() == "comment":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            comment = value
        i += 1
    data = "".join(ln.strip() for ln in body[i:])
    if not data:
        raise _damaged()
    blob = _decode_b64(data)
    key_type = _blob_type(blob)
    _check_type(key_type)
    return _finish(key_type, blob, comment, (), "rfc4716")


def _check_type(key_type: str) -> None:
    if key_type in ACCEPTED:
        return
    if key_type in _REFUSED_TYPES:
        raise ParseError("unsupported_type", _REFUSED_TYPES[key_type], type=key_type)
    if _is_cert_type(key_type):
        raise ParseError("unsupported_type", "certificates are not accepted: paste the plain public key",
                         type=key_type)
    if key_type.startswith("x509v3-"):
        raise ParseError("unsupported_type", "X.509 keys are not accepted: paste an OpenSSH public key",
                         type=key_type)
    raise _not_a_key()


def _decode_b64(data: str) -> bytes:
    if not _B64_RE.match(data):
        raise _damaged()
    if len(data) % 4:
        raise _damaged()
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _damaged() from None


def _blob_type(blob: bytes) -> str:
    """The algorithm name the key blob starts with."""
    if len(blob) < 4:
        raise _damaged()
    (n,) = struct.unpack(">I", blob[:4])
    if n == 0 or n > 64 or len(blob) < 4 + n:
        raise _damaged()
    try:
        return blob[4:4 + n].decode("ascii")
    except UnicodeDecodeError:
        raise _damaged() from None


def _finish(key_type: str, blob: bytes, comment: str, options_removed: tuple[str, ...],
            source_format: str) -> ParsedKey:
    if _blob_type(blob) != key_type:
        raise ParseError("damaged", "the key data does not match its type (it says one thing and holds another)")
    try:
        key = asyncssh.import_public_key(f"{key_type} {base64.b64encode(blob).decode('ascii')}")
    except Exception:  # asyncssh and cryptography raise several kinds for bad input
        raise _damaged() from None
    if key.algorithm.decode("ascii") != key_type or key.public_data != blob:
        raise _damaged()
    size = _FIXED_BITS.get(key_type) or getattr(key.pyca_key, "key_size", None)
    if not isinstance(size, int) or size <= 0:
        raise _damaged()
    bits = size
    if key_type == "ssh-rsa":
        if bits < MIN_RSA_BITS:
            raise ParseError(
                "weak_key",
                f"RSA keys must have at least {MIN_RSA_BITS} bits; this one has {bits}. "
                "Make a new key (ssh-keygen -t ed25519)",
                bits=bits, min=MIN_RSA_BITS,
            )
        if bits > MAX_RSA_BITS:
            raise ParseError("unsupported_type", f"RSA keys over {MAX_RSA_BITS} bits are not accepted by OpenSSH",
                             type=key_type)
    return ParsedKey(key_type=key_type, blob=blob, bits=bits, comment=normalise_comment(comment),
                     options_removed=options_removed, source_format=source_format)


def normalise_comment(comment: str) -> str:
    """Printable, on one line, single spaces, at most MAX_COMMENT characters."""
    if any(_bad_char(c) for c in comment):
        raise ParseError("control_characters", "the key's comment contains control characters or line breaks")
    kept = "".join(c if c.isprintable() else (" " if c == "\t" else "") for c in comment)
    return " ".join(kept.split())[:MAX_COMMENT].rstrip()
