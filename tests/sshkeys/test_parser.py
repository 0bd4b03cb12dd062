"""dmd.sshkeys: keys are parsed (asyncssh), not pattern-matched; fingerprints as ssh-keygen prints them."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dmd.sshkeys import MAX_COMMENT, MAX_INPUT_BYTES, ParseError, fingerprint_of, parse_public_key
from tests.sshkeys.conftest import KINDS, keygen_l, ssh_keygen

VALID = [k for k in KINDS if k != "rsa1024"]


def _s(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def refused(text: str | bytes, code: str) -> ParseError:
    with pytest.raises(ParseError) as exc:
        parse_public_key(text)
    assert exc.value.code == code, (exc.value.code, exc.value.message)
    assert exc.value.message
    return exc.value


# --- what is accepted ------------------------------------------------------------------

@pytest.mark.parametrize("kind", VALID)
def test_every_valid_type_matches_ssh_keygen(keys, kind):
    k = keys[kind]
    parsed = parse_public_key(k.pub_text)
    bits, fingerprint, label = keygen_l(k.public)
    assert parsed.fingerprint == fingerprint
    assert parsed.bits == bits
    assert parsed.label == label
    assert parsed.key_type == k.pub_line.split()[0]
    assert parsed.comment == f"{kind}@test"
    # The canonical line is exactly what ssh-keygen wrote.
    assert parsed.line == k.pub_line
    assert fingerprint_of(parsed.blob) == fingerprint
    # The private key file gives the same fingerprint to ssh-keygen (it reads the public half).
    assert keygen_l(k.private)[1] == fingerprint


@pytest.mark.parametrize("kind", VALID)
def test_bytes_and_surrounding_whitespace(keys, kind):
    k = keys[kind]
    for text in (k.public.read_bytes(), "\ufeff" + k.pub_line + "\r\n", "  \n" + k.pub_line + "\n\n  ",
                 k.pub_line.replace(" ", "\t")):
        assert parse_public_key(text).line == k.pub_line


@pytest.mark.parametrize("kind", VALID)
def test_rfc4716_from_ssh_keygen(keys, kind, tmp_path):
    k = keys[kind]
    exported = subprocess.run([ssh_keygen(), "-e", "-f", str(k.public)], check=True, capture_output=True,
                              text=True).stdout
    assert exported.startswith("---- BEGIN SSH2 PUBLIC KEY ----")
    parsed = parse_public_key(exported)
    assert parsed.source_format == "rfc4716"
    assert parsed.fingerprint == keygen_l(k.public)[1]
    assert "converted by" in parsed.comment  # the Comment header, without its quotes
    assert not parsed.comment.startswith('"')
    assert parsed.line.split()[:2] == k.pub_line.split()[:2]
    # ssh-keygen imports the stored line back to the same key.
    f = tmp_path / "stored.pub"
    f.write_text(parsed.line + "\n")
    assert keygen_l(f)[1] == parsed.fingerprint


def test_rfc4716_headers_and_continuations(keys):
    data = keys["ed25519"].pub_line.split()[1]
    block = "\r\n".join([
        "---- BEGIN SSH2 PUBLIC KEY ----",
        "Subject: someone",
        'Comment: "a long comment that goes \\',
        'on and on"',
        "x-private-header: 1",
        data[:40], data[40:],
        "---- END SSH2 PUBLIC KEY ----", "",
    ])
    parsed = parse_public_key(block)
    assert parsed.comment == "a long comment that goes on and on"
    assert parsed.fingerprint == keygen_l(keys["ed25519"].public)[1]


def _write_sk(tmp_path: Path, kind: str) -> tuple[str, Path]:
    if kind == "ed25519":
        blob = _s(b"sk-ssh-ed25519@openssh.com") + _s(os.urandom(32)) + _s(b"ssh:")
    else:
        point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        blob = _s(b"sk-ecdsa-sha2-nistp256@openssh.com") + _s(b"nistp256") + _s(point) + _s(b"ssh:")
    key_type = blob[4:4 + struct.unpack(">I", blob[:4])[0]].decode()
    line = f"{key_type} {base64.b64encode(blob).decode()} yubikey@desk"
    path = tmp_path / f"sk-{kind}.pub"
    path.write_text(line + "\n")
    return line, path


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_security_key_types_are_accepted(tmp_path, kind):
    line, path = _write_sk(tmp_path, kind)
    parsed = parse_public_key(line)
    bits, fingerprint, label = keygen_l(path)
    assert (parsed.bits, parsed.fingerprint, parsed.label) == (bits, fingerprint, label)
    assert parsed.line == line


@pytest.mark.parametrize("prefix, names", [
    ('no-pty,command="rm -rf /" ', ("no-pty", "command")),
    ('command="echo \\"hi there\\"; rm -rf /",no-port-forwarding\t', ("command", "no-port-forwarding")),
    ('environment="LD_PRELOAD=/tmp/evil.so",from="*.example.org,!10.0.0.1" ', ("environment", "from")),
    ('restrict,pty ', ("restrict", "pty")),
    ('cert-authority ', ("cert-authority",)),
])
def test_options_are_stripped(keys, prefix, names):
    k = keys["ed25519"]
    parsed = parse_public_key(prefix + k.pub_line)
    assert parsed.line == k.pub_line
    assert parsed.options_removed == names
    assert "command" not in parsed.line and "rm -rf" not in parsed.line


def test_comments_are_normalised(keys):
    t, data = keys["ed25519"].pub_line.split()[:2]
    assert parse_public_key(f"{t} {data}").comment == ""
    assert parse_public_key(f"{t} {data}").line == f"{t} {data}"
    assert parse_public_key(f"{t} {data}   me   at\thost  ").comment == "me at host"
    assert parse_public_key(f"{t} {data} 山田@研究室").comment == "山田@研究室"
    assert parse_public_key(f"{t} {data} zero\u200bwidth\ufeff").comment == "zerowidth"
    long = parse_public_key(f"{t} {data} " + "c" * 500)
    assert long.comment == "c" * MAX_COMMENT
    assert long.line == f"{t} {data} " + "c" * MAX_COMMENT


# --- what is refused -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ed25519", "ecdsa256", "rsa2048"])
def test_private_keys_are_refused(keys, kind):
    k = keys[kind]
    err = refused(k.private.read_text(), "private_key")
    assert ".pub" in err.message
    assert "PRIVATE" not in err.message  # nothing of the key is echoed
    refused(k.private.read_bytes(), "private_key")
    refused(k.pub_line + "\n" + k.private.read_text(), "private_key")


def test_pem_private_and_public_keys(keys, tmp_path):
    pem = tmp_path / "pem"
    subprocess.run([ssh_keygen(), "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(pem)],
                   check=True, capture_output=True)
    assert "BEGIN RSA PRIVATE KEY" in pem.read_text()
    refused(pem.read_text(), "private_key")
    pkcs8 = subprocess.run([ssh_keygen(), "-e", "-m", "PKCS8", "-f", str(keys["rsa2048"].public)], check=True,
                           capture_output=True, text=True).stdout
    assert pkcs8.startswith("-----BEGIN PUBLIC KEY-----")
    refused(pkcs8, "unsupported_format")
    refused("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n", "private_key")
    refused("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nP2/56wAAA\n", "private_key")
    # Only its END line (the start was not copied).
    refused("\n".join(keys["ed25519"].private.read_text().splitlines()[2:]), "private_key")


def test_the_words_private_key_in_a_comment_are_fine(keys):
    assert parse_public_key(keys["ed25519"].pub_line + " my private key, backup").comment == (
        "ed25519@test my private key, backup")


def test_short_rsa_is_refused(keys):
    assert keygen_l(keys["rsa1024"].public)[0] == 1024
    err = refused(keys["rsa1024"].pub_text, "weak_key")
    assert err.params == {"bits": 1024, "min": 2048}
    assert "2048" in err.message


def test_dsa_is_refused(keys, tmp_path):
    if "dsa" in keys:
        line = keys["dsa"].pub_line
    else:  # OpenSSH without DSA: a well-formed DSA key built here
        from cryptography.hazmat.primitives.asymmetric import dsa

        n = dsa.generate_private_key(1024).public_key().public_numbers()  # noqa: S505 (refused on purpose)
        blob = _s(b"ssh-dss") + b"".join(_s(v.to_bytes((v.bit_length() + 8) // 8, "big"))
                                          for v in (n.parameter_numbers.p, n.parameter_numbers.q,
                                                    n.parameter_numbers.g, n.y))
        line = "ssh-dss " + base64.b64encode(blob).decode()
    err = refused(line, "unsupported_type")
    assert "DSA" in err.message


def test_certificates_are_refused(keys, tmp_path):
    ca = tmp_path / "ca"
    subprocess.run([ssh_keygen(), "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True, capture_output=True)
    user = tmp_path / "user.pub"
    user.write_text(keys["ed25519"].pub_text)
    subprocess.run([ssh_keygen(), "-q", "-s", str(ca), "-I", "someone", str(user)], check=True, capture_output=True)
    cert = (tmp_path / "user-cert.pub").read_text()
    assert cert.startswith("ssh-ed25519-cert-v01@openssh.com ")
    err = refused(cert, "unsupported_type")
    assert "certificate" in err.message


@pytest.mark.parametrize("cut", [10, 30, 60, -12, -24])
def test_truncated_keys_are_refused(keys, cut):
    t, data = keys["rsa2048"].pub_line.split()[:2]
    line = f"{t} {data[:cut]}"
    with pytest.raises(ParseError) as exc:
        parse_public_key(line)
    assert exc.value.code == "damaged"


def test_truncated_at_a_base64_boundary(keys):
    t, data = keys["ed25519"].pub_line.split()[:2]
    blob = base64.b64decode(data)
    refused(f"{t} {base64.b64encode(blob[:-3]).decode()}", "damaged")
    refused(f"{t} {base64.b64encode(blob + b'xyz').decode()}", "damaged")  # trailing bytes in the blob
    refused(f"{t} {data[:-1]}", "damaged")
    refused(f"{t} {data}!!", "damaged")
    refused(f"ssh-rsa {data}", "damaged")  # says rsa, holds ed25519
    refused("ssh-ed25519", "damaged")


def test_bad_ecdsa_point_is_refused():
    blob = _s(b"ecdsa-sha2-nistp256") + _s(b"nistp256") + _s(b"\x04" + b"\x01" * 64)
    refused("ecdsa-sha2-nistp256 " + base64.b64encode(blob).decode(), "damaged")


@pytest.mark.parametrize("mangle, code", [
    (lambda t, d, c: f"{t} {d[:20]}\n{d[20:]} {c}", "line_break"),
    (lambda t, d, c: f"{t} {d} {c}\nmore", "line_break"),
    (lambda t, d, c: f"{t} {d} {c}\rcommand=\"x\"", "line_break"),
    (lambda t, d, c: f"{t} {d} a\u2028b", "line_break"),
    (lambda t, d, c: f"{t} {d} a\x85b", "line_break"),
    (lambda t, d, c: f"{t} {d} a\x00b", "control_characters"),
    (lambda t, d, c: f"{t} {d} \x1b[31mred", "control_characters"),
    (lambda t, d, c: f"{t} {d} a\x7fb", "control_characters"),
    (lambda t, d, c: f"{t} {d} {c}\nssh-ed25519 {d} again", "multiple_keys"),
    (lambda t, d, c: f"{t} {d} {c} {t} {d} {c}", "multiple_keys"),
    (lambda t, d, c: f'command="x {t} {d} {c}', "bad_options"),
    (lambda t, d, c: f"{t} {d} " + "x" * (MAX_INPUT_BYTES + 1), "too_large"),
])
def test_mangled_lines_are_refused(keys, mangle, code):
    t, d, c = keys["ed25519"].pub_line.split()
    refused(mangle(t, d, c), code)


def test_two_key_lines_are_refused(keys):
    refused(keys["ed25519"].pub_text + keys["ecdsa256"].pub_text, "multiple_keys")
    refused(keys["ed25519"].pub_text + "\n\n" + keys["rsa2048"].pub_text, "multiple_keys")


@pytest.mark.parametrize("text, code", [
    ("", "empty"),
    ("  \n\t ", "empty"),
    ("hello world", "not_a_key"),
    ("no-pty", "not_a_key"),
    ("no-pty,command=\"ls\"   ", "not_a_key"),
    ("SHA256:LEMY+NxFnbh6eZJAVN/7R4oaavKC4pTMleb9knsbQXI", "not_a_key"),
    ("256 SHA256:LEMY+NxFnbh6eZJAVN/7R4oaavKC4pTMleb9knsbQXI me (ED25519)", "not_a_key"),
    ("'; DROP TABLE ssh_keys; --", "not_a_key"),
    ("<script>alert(1)</script>", "not_a_key"),
    ("ssh-ed448 AAAAC3NzaC1lZDQ0OAAAADk", "unsupported_type"),
    ("rsa-sha2-512 AAAAB3NzaC1yc2E", "unsupported_type"),
    ("x509v3-ssh-rsa AAAA", "unsupported_type"),
    (b"\xff\xfe\x00\x01garbage", "not_a_key"),
    ("---- BEGIN SSH2 PUBLIC KEY ----\nAAAAC3NzaC1lZDI1NTE5\n", "damaged"),
])
def test_garbage_is_refused(text, code):
    refused(text, code)


def test_rfc4716_refusals(keys):
    exported = subprocess.run([ssh_keygen(), "-e", "-f", str(keys["ed25519"].public)], check=True,
                              capture_output=True, text=True).stdout
    refused(exported + "trailing words\n", "trailing_garbage")
    refused(exported + exported, "multiple_keys")
    refused(exported + keys["rsa2048"].pub_text, "multiple_keys")
    refused(exported.replace("---- END SSH2 PUBLIC KEY ----", ""), "damaged")
    refused(exported.replace("Comment:", "Comment:\x00"), "control_characters")
    lines = exported.splitlines()
    refused("\n".join([lines[0], lines[1], lines[2][:-8], lines[-1]]), "damaged")


def test_huge_private_key_says_private_not_too_large(keys):
    text = keys["rsa2048"].private.read_text() + "#" * (MAX_INPUT_BYTES * 2)
    refused(text, "private_key")
    refused(text.encode(), "private_key")
