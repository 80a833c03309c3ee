"""Checkpoints of a Merkle log as C2SP signed notes, witness cosignatures (C2SP tlog-cosignature), Ed25519 keys,
and a verifier that needs only public keys and proofs. Pure: no I/O.

A checkpoint (C2SP tlog-checkpoint) is the note body

    <origin>\\n<tree size>\\n<base64 root hash>\\n

and a signed note (C2SP signed-note) is the body, a blank line, and one line per signature:

    \\u2014 <key name> <base64(key id (4 bytes) || Ed25519 signature of the body)>\\n

with key id = SHA-256(<key name> || 0x0A || 0x01 || public key)[:4] (0x01: the Ed25519 signature type). Keys are
written as Go's `golang.org/x/mod/sumdb/note` writes them: the verifier key `<name>+<key id hex>+<base64(0x01 ||
public key)>`, the signer key `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || 32-byte seed)>`.

A witness cosigns with a C2SP tlog-cosignature/v1 (signature type 0x04): a signature line of its own,

    \\u2014 <witness name> <base64(key id (4) || timestamp (uint64, big-endian, 8) || Ed25519 signature (64))>\\n

with key id = SHA-256(<name> || 0x0A || 0x04 || public key)[:4], the signature over
`cosignature/v1\\ntime <timestamp>\\n<note body>` (the timestamp in decimal POSIX seconds). The type byte keeps a
cosignature from ever passing for the log's own signature (type 0x01) and the other way round; a witness's verifier
key is written `<name>+<key id hex>+<base64(0x04 || public key)>`. The log's checkpoint signature stays a plain
Ed25519 note signature, as the spec says. Key rotation: a verifier accepts any key of a set, so a log signs with
its new key while the old public key stays known for old checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cta import merkle

ED25519_TYPE = b"\x01"  # a plain Ed25519 note signature: the log's own
COSIGNATURE_V1_TYPE = b"\x04"  # a timestamped Ed25519 cosignature (c2sp.org/tlog-cosignature): a witness's
KEY_TYPES = {ED25519_TYPE: "Ed25519", COSIGNATURE_V1_TYPE: "Ed25519 cosignature/v1"}
COSIGNATURE_HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1  # the spec: a cosignature's timestamp "MUST NOT exceed 2^63 - 1"
SIGNATURE_DASH = "\u2014"  # the em dash that starts a signature line
PRIVATE_PREFIX = "PRIVATE+KEY+"


class NoteError(ValueError):
    """A malformed note or key, or a note no known key signed."""


def _check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name) or not name.isprintable():
        raise NoteError(f"key name {name!r}: non-empty, printable, without spaces or '+'")
    return name


def key_id(name: str, public_key: bytes, key_type: bytes = ED25519_TYPE) -> bytes:
    """The 4-byte key id: SHA-256(name || 0x0A || type || public key)[:4]. The type byte (0x01 note signature, 0x04
    cosignature) makes one key's two uses two different ids."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + key_type + public_key).digest()[:4]


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteError(f"not base64: {text[:16]!r}") from e


def _split_key(text: str, what: str) -> tuple[str, bytes, bytes, bytes]:
    """(name, key id, type byte, 32-byte key) of `<name>+<key id hex>+<base64(type || key)>`."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"a {what} key is <name>+<key id hex>+<base64 key>")
    name, hex_id, raw = parts
    try:
        kid = bytes.fromhex(hex_id)
    except ValueError as e:
        raise NoteError(f"{what} key {name!r}: the key id is not hex") from e
    blob = _b64decode(raw)
    if len(kid) != 4 or len(blob) != 33 or blob[:1] not in KEY_TYPES:
        raise NoteError(f"{what} key {name!r}: not an Ed25519 key (type 0x01 or 0x04, 32 bytes)")
    return _check_name(name), kid, blob[:1], blob[1:]


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a tlog-cosignature/v1 signs: `cosignature/v1\\n`, `time <timestamp>\\n`, then the whole note body."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


def _ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Verifier:
    """A public key that verifies the signatures of one key name: a log's note signatures (type 0x01) or a
    witness's cosignatures (type 0x04), never both."""

    name: str
    key_id: bytes
    public_key: bytes
    key_type: bytes = ED25519_TYPE

    @classmethod
    def parse(cls, text: str) -> Verifier:
        name, kid, key_type, public = _split_key(text, "verifier")
        if key_id(name, public, key_type) != kid:
            raise NoteError(f"verifier key {name!r}: the key id does not match the key")
        return cls(name, kid, public, key_type)

    @property
    def is_cosigner(self) -> bool:
        return self.key_type == COSIGNATURE_V1_TYPE

    def as_cosigner(self) -> Verifier:
        """The same public key as a cosignature (type 0x04) verifier: its own key id."""
        return Verifier(
            self.name, key_id(self.name, self.public_key, COSIGNATURE_V1_TYPE), self.public_key, COSIGNATURE_V1_TYPE
        )

    def encode(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(self.key_type + self.public_key).decode()}"

    def cosignature_time(self, body: str, signature: bytes) -> int | None:
        """The timestamp of a valid cosignature/v1 of `body` (the signature without its key id); None when it is
        not one (this is not a cosigner key, the length, the timestamp or the Ed25519 signature is wrong)."""
        if not self.is_cosigner or len(signature) != 8 + 64:
            return None
        (timestamp,) = struct.unpack(">Q", signature[:8])
        if timestamp > MAX_TIMESTAMP:
            return None
        return (
            timestamp if _ed25519_verify(self.public_key, cosignature_message(body, timestamp), signature[8:]) else None
        )

    def verify_note(self, body: str, signature: bytes) -> bool:
        """Whether `signature` (without its key id) is this key's valid signature of the note body, by its type."""
        if self.is_cosigner:
            return self.cosignature_time(body, signature) is not None
        return _ed25519_verify(self.public_key, body.encode("utf-8"), signature)


class Signer:
    """A private Ed25519 key with its name: it signs notes (the log, `verifier`) and cosigns checkpoints (a
    witness, `cosigner`). Its repr never shows the key."""

    def __init__(self, name: str, seed: bytes, key_type: bytes = ED25519_TYPE) -> None:
        self.name = _check_name(name)
        self.key_type = key_type  # what the encoded private key says it is for: 0x01 a log, 0x04 a witness
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = Verifier(name, key_id(name, public), public)
        self.cosigner = self.verifier.as_cosigner()

    @classmethod
    def parse(cls, text: str) -> Signer:
        """A signer key `PRIVATE+KEY+<name>+<key id hex>+<base64(type || seed)>`, type 0x01 (as Go's note package
        writes it) or 0x04 (a cosigner's key as some witness tools write it); the key id is checked for its type."""
        if not text.startswith(PRIVATE_PREFIX):
            raise NoteError(f"a signer key starts with {PRIVATE_PREFIX!r}")
        name, kid, key_type, seed = _split_key(text[len(PRIVATE_PREFIX) :], "signer")
        signer = cls(name, seed, key_type)
        if (signer.cosigner if key_type == COSIGNATURE_V1_TYPE else signer.verifier).key_id != kid:
            raise NoteError(f"signer key {name!r}: the key id does not match the key")
        return signer

    @classmethod
    def generate(cls, name: str, key_type: bytes = ED25519_TYPE) -> tuple[Signer, str]:
        """A new key: the signer and its encoded private form (to store as a secret), typed 0x01 for a log's key or
        0x04 for a witness's (the key id in it is then the one of its cosignatures)."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        if key_type not in KEY_TYPES:
            raise NoteError(f"key type 0x{key_type.hex()}: 0x01 (a log) or 0x04 (a witness)")
        seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        signer = cls(name, seed, key_type)
        public = signer.cosigner if key_type == COSIGNATURE_V1_TYPE else signer.verifier
        encoded = f"{PRIVATE_PREFIX}{name}+{public.key_id.hex()}+{base64.b64encode(key_type + seed).decode()}"
        return signer, encoded

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        public = self.cosigner if self.key_type == COSIGNATURE_V1_TYPE else self.verifier
        return f"Signer({self.name!r}, key id {public.key_id.hex()})"


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
        """The names of the given keys whose signature on this note verifies (each by its key's type: a note
        signature for 0x01, a cosignature/v1 for 0x04)."""
        by_id = {(v.name, v.key_id): v for v in verifiers}
        names = []
        for s in self.signatures:
            verifier = by_id.get((s.name, s.key_id))
            if verifier is not None and verifier.verify_note(self.body, s.signature) and s.name not in names:
                names.append(s.name)
        return names

    def cosigned_by(self, cosigners: Iterable[Verifier]) -> dict[str, int]:
        """The valid cosignatures/v1 of the given witness keys: name -> timestamp (POSIX seconds)."""
        by_id = {(v.name, v.key_id): v for v in cosigners if v.is_cosigner}
        times: dict[str, int] = {}
        for s in self.signatures:
            verifier = by_id.get((s.name, s.key_id))
            timestamp = None if verifier is None else verifier.cosignature_time(self.body, s.signature)
            if timestamp is not None and s.name not in times:
                times[s.name] = timestamp
        return times


def _signature(body: str, signer: Signer) -> NoteSignature:
    return NoteSignature(signer.name, signer.verifier.key_id, signer.sign(body.encode("utf-8")))


def sign(body: str, signer: Signer) -> str:
    """The signed note of `body` (which ends with a newline) with one signature."""
    if not body.endswith("\n") or "\n\n" in body:
        raise NoteError("a note body ends with a newline and has no blank line")
    return Note(body, (_signature(body, signer),)).text()


def cosignature(body: str, signer: Signer, timestamp: int) -> NoteSignature:
    """`signer`'s tlog-cosignature/v1 of a checkpoint body at `timestamp` (POSIX seconds)."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"a cosignature's timestamp is 0..2^63-1 seconds, not {timestamp}")
    signed = signer.sign(cosignature_message(body, timestamp))
    return NoteSignature(signer.name, signer.cosigner.key_id, struct.pack(">Q", timestamp) + signed)


def cosign(note_text: str, signer: Signer, timestamp: int | None = None) -> str:
    """`note_text` with `signer`'s tlog-cosignature/v1 added, made at `timestamp` (POSIX seconds; None: now),
    replacing an earlier cosignature by the same key. Only a checkpoint body is cosigned."""
    note = Note.parse(note_text)
    Checkpoint.parse(note.body)
    mine = (signer.name, signer.cosigner.key_id)
    others = tuple(s for s in note.signatures if (s.name, s.key_id) != mine)
    when = int(time.time()) if timestamp is None else timestamp
    return Note(note.body, (*others, cosignature(note.body, signer, when))).text()


def verify_cosignature(note_text: str, cosigner: Verifier) -> int:
    """The timestamp of `cosigner`'s valid tlog-cosignature/v1 on the note; NoteError saying what is wrong (not a
    cosigner key, no signature line of that name and key id, a signature that does not verify)."""
    if not cosigner.is_cosigner:
        raise NoteError(
            f"key {cosigner.name!r} is not a cosigner key (type 0x04); its type is 0x{cosigner.key_type.hex()}"
        )
    note = Note.parse(note_text)
    lines = [s for s in note.signatures if (s.name, s.key_id) == (cosigner.name, cosigner.key_id)]
    if not lines:
        raise NoteError(f"no cosignature by {cosigner.name!r} (key id {cosigner.key_id.hex()}) on the note")
    for line in lines:
        timestamp = cosigner.cosignature_time(note.body, line.signature)
        if timestamp is not None:
            return timestamp
    raise NoteError(f"the cosignature by {cosigner.name!r} does not verify (another body, time or key)")


def open_checkpoint(note_text: str, log_keys: Sequence[Verifier], origin: str | None = None) -> Checkpoint:
    """The checkpoint of a signed note, once a signature by one of the log's keys verifies (NoteError if not).
    Only note-signature keys (type 0x01) count: a witness's cosignature is not the log's signature."""
    note = Note.parse(note_text)
    if not note.signed_by([k for k in log_keys if not k.is_cosigner]):
        cosigners = [k.name for k in log_keys if k.is_cosigner]
        hint = f" ({', '.join(cosigners)}: cosigner keys, type 0x04, verify cosignatures only)" if cosigners else ""
        raise NoteError(f"the checkpoint carries no valid signature of a known log key{hint}")
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
