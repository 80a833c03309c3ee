"""Checkpoints of a Merkle log as C2SP signed notes, Ed25519 keys, and a verifier that needs only public keys
and proofs. Pure: no I/O.

A checkpoint (C2SP tlog-checkpoint) is the note body

    <origin>\\n<tree size>\\n<base64 root hash>\\n

and a signed note (C2SP signed-note) is the body, a blank line, and one line per signature:

    \\u2014 <key name> <base64(key id (4 bytes) || Ed25519 signature of the body)>\\n

with key id = SHA-256(<key name> || 0x0A || 0x01 || public key)[:4] (0x01: the Ed25519 signature type). Keys are
written as Go's `golang.org/x/mod/sumdb/note` writes them: the verifier key `<name>+<key id hex>+<base64(0x01 ||
public key)>`, the signer key `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || 32-byte seed)>`.

A witness cosigns by adding its own signature line over the same body (a plain Ed25519 note signature; the
timestamped C2SP tlog-cosignature type 0x04 is not implemented). Key rotation: a verifier accepts any key of a
set (`Verifiers`), so a log signs with its new key while the old public key stays known for old checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cta import merkle

ED25519_TYPE = b"\x01"
SIGNATURE_DASH = "\u2014"  # the em dash that starts a signature line
PRIVATE_PREFIX = "PRIVATE+KEY+"


class NoteError(ValueError):
    """A malformed note or key, or a note no known key signed."""


def _check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name) or not name.isprintable():
        raise NoteError(f"key name {name!r}: non-empty, printable, without spaces or '+'")
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key id of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + public_key).digest()[:4]


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError(f"not base64: {text[:16]!r}") from e


def _split_key(text: str, what: str) -> tuple[str, bytes, bytes]:
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"a {what} key is <name>+<key id hex>+<base64 key>")
    name, hex_id, raw = parts
    try:
        kid = bytes.fromhex(hex_id)
    except ValueError as e:
        raise NoteError(f"{what} key {name!r}: the key id is not hex") from e
    blob = _b64decode(raw)
    if len(kid) != 4 or len(blob) != 33 or blob[:1] != ED25519_TYPE:
        raise NoteError(f"{what} key {name!r}: not an Ed25519 key (type 0x01, 32 bytes)")
    return _check_name(name), kid, blob[1:]


@dataclass(frozen=True)
class Verifier:
    """A public key that verifies the signatures of one key name."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        name, kid, public = _split_key(text, "verifier")
        if key_id(name, public) != kid:
            raise NoteError(f"verifier key {name!r}: the key id does not match the key")
        return cls(name, kid, public)

    def encode(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ED25519_TYPE + self.public_key).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """A private Ed25519 key with its name. Its repr never shows the key."""

    def __init__(self, name: str, seed: bytes) -> None:
        self.name = _check_name(name)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = Verifier(name, key_id(name, public), public)

    @classmethod
    def parse(cls, text: str) -> Signer:
        """A signer key `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || seed)>`."""
        if not text.startswith(PRIVATE_PREFIX):
            raise NoteError(f"a signer key starts with {PRIVATE_PREFIX!r}")
        name, kid, seed = _split_key(text[len(PRIVATE_PREFIX) :], "signer")
        signer = cls(name, seed)
        if signer.verifier.key_id != kid:
            raise NoteError(f"signer key {name!r}: the key id does not match the key")
        return signer

    @classmethod
    def generate(cls, name: str) -> tuple[Signer, str]:
        """A new key: the signer and its encoded private form (to store as a secret)."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        signer = cls(name, seed)
        encoded = (
            f"{PRIVATE_PREFIX}{name}+{signer.verifier.key_id.hex()}+{base64.b64encode(ED25519_TYPE + seed).decode()}"
        )
        return signer, encoded

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, key id {self.verifier.key_id.hex()})"


# ----- checkpoints and signed notes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not lines[0] or not lines[1].isdigit():
            raise NoteError("a checkpoint body is <origin>\\n<tree size>\\n<base64 root hash>\\n[extensions]")
        if len(lines[1]) > 1 and lines[1].startswith("0"):
            raise NoteError("a checkpoint's tree size has no leading zeros")
        root = _b64decode(lines[2])
        if len(root) != merkle.HASH_SIZE:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        return cls(lines[0], int(lines[1]), root)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{SIGNATURE_DASH} {self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    body: str
    signatures: tuple[NoteSignature, ...]

    def text(self) -> str:
        return self.body + "\n" + "".join(s.line() for s in self.signatures)

    @classmethod
    def parse(cls, text: str) -> Note:
        """Split a signed note into its body and signature lines (nothing is verified here)."""
        body, sep, signature_block = text.rpartition("\n\n")
        if not sep or not signature_block.endswith("\n"):
            raise NoteError("a signed note is <body>\\n, a blank line, and signature lines ending in \\n")
        signatures = []
        for line in signature_block[:-1].split("\n"):
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != SIGNATURE_DASH:
                raise NoteError(f"malformed signature line {line[:40]!r}")
            blob = _b64decode(parts[2])
            if len(blob) < 5:
                raise NoteError("a signature is a 4-byte key id and the signature")
            signatures.append(NoteSignature(_check_name(parts[1]), blob[:4], blob[4:]))
        return cls(body + "\n", tuple(signatures))

    def signed_by(self, verifiers: Iterable[Verifier]) -> list[str]:
        """The names of the given keys whose signature on this note verifies."""
        by_id = {(v.name, v.key_id): v for v in verifiers}
        names = []
        message = self.body.encode("utf-8")
        for s in self.signatures:
            verifier = by_id.get((s.name, s.key_id))
            if verifier is not None and verifier.verify(message, s.signature) and s.name not in names:
                names.append(s.name)
        return names


def _signature(body: str, signer: Signer) -> NoteSignature:
    return NoteSignature(signer.name, signer.verifier.key_id, signer.sign(body.encode("utf-8")))


def sign(body: str, signer: Signer) -> str:
    """The signed note of `body` (which ends with a newline) with one signature."""
    if not body.endswith("\n") or "\n\n" in body:
        raise NoteError("a note body ends with a newline and has no blank line")
    return Note(body, (_signature(body, signer),)).text()


def cosign(note_text: str, signer: Signer) -> str:
    """`note_text` with `signer`'s signature added (replacing an earlier one by the same key)."""
    note = Note.parse(note_text)
    mine = (signer.name, signer.verifier.key_id)
    others = tuple(s for s in note.signatures if (s.name, s.key_id) != mine)
    return Note(note.body, (*others, _signature(note.body, signer))).text()


def open_checkpoint(note_text: str, log_keys: Sequence[Verifier], origin: str | None = None) -> Checkpoint:
    """The checkpoint of a signed note, once a signature by one of the log's keys verifies (NoteError if not)."""
    note = Note.parse(note_text)
    if not note.signed_by(log_keys):
        raise NoteError("the checkpoint carries no valid signature of a known log key")
    checkpoint = Checkpoint.parse(note.body)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"the checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


# ----- the standalone verifier -----------------------------------------------------------------------------------


def verify_inclusion(
    note_text: str, log_keys: Sequence[Verifier], leaf_data: bytes, index: int, proof: Sequence[bytes]
) -> Checkpoint:
    """Check that `leaf_data` (an entry's canonical encoding) is leaf `index` of the signed checkpoint; returns
    the checkpoint, raises NoteError when the signature or the proof does not hold."""
    checkpoint = open_checkpoint(note_text, log_keys)
    if not merkle.verify_inclusion(merkle.leaf_hash(leaf_data), index, checkpoint.size, proof, checkpoint.root):
        raise NoteError(f"the inclusion proof of leaf {index} does not match checkpoint {checkpoint.size}")
    return checkpoint


def verify_consistency(
    old_note: str, new_note: str, log_keys: Sequence[Verifier], proof: Sequence[bytes]
) -> tuple[Checkpoint, Checkpoint]:
    """Check that the tree of the signed checkpoint `old_note` is a prefix of that of `new_note`. A shrinking tree
    or two roots for one size (a fork) raise NoteError saying so."""
    old = open_checkpoint(old_note, log_keys)
    new = open_checkpoint(new_note, log_keys, origin=old.origin)
    if new.size < old.size:
        raise NoteError(f"the log shrank from {old.size} to {new.size} entries: refused")
    if new.size == old.size and new.root != old.root:
        raise NoteError(f"the log forked: two different roots for tree size {new.size}")
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise NoteError(f"checkpoint {new.size} is not consistent with checkpoint {old.size}: the log forked")
    return old, new
