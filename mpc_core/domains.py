"""Domain-separation tags for every hash, PRG stream and signature in shardproof.

All tags live here so that no two uses can collide by accident. A tag is
ASCII bytes of the form b"shardproof/<area>/<use>/v<version>".
"""

# --- mpc_core -------------------------------------------------------------
PRG_STREAM = b"shardproof/prg/stream/v1"  # context prefix of a BLAKE3 keyed XOF stream
SEED_DERIVE = b"shardproof/dealer/seed-derive/v1"  # dealer master seed -> party seed
SEED_COMMIT = b"shardproof/dealer/seed-commit/v1"  # public commitment to a party seed
TRANSCRIPT_TENSOR = b"shardproof/transcript/tensor/v1"  # digest of a share/message tensor
TRANSCRIPT_STEP = b"shardproof/transcript/step/v1"  # digest of one transcript record
SHARE_SPLIT = b"shardproof/share/split/v1"  # PRG purpose used when splitting plaintext into shares
MESH_HELLO = b"shardproof/transport/mesh-hello/v1"  # first frame of every mesh connection (mpc_core.mesh)
MESH_REJOIN = b"shardproof/transport/mesh-rejoin/v1"  # a standby's signed hello for a lost rank (mpc_core.mesh)

# --- commitments (nodes, model owner) -------------------------------------
COMMITMENT = b"shardproof/commit/salted/v1"  # H(tag || nonce || canonical bytes)

# --- ledger ---------------------------------------------------------------
LEDGER_ENTRY_SIG = b"shardproof/ledger/entry-sig/v1"  # Ed25519 signature over an entry's to-be-signed bytes
LEDGER_CHECKPOINT = b"shardproof/ledger/checkpoint/v1"  # BLS (co)signature over a checkpoint (signed tree head)
LEDGER_JOB_ROOT = b"shardproof/ledger/job-root/v1"  # BLS cosignature of a node over its job root
LEDGER_ED25519_SEED = b"shardproof/ledger/ed25519-seed/v1"  # identity seed -> Ed25519 private key
LEDGER_BLS_IKM = b"shardproof/ledger/bls-ikm/v1"  # identity seed -> BLS KeyGen input key material

# --- channels ---------------------------------------------------------------
# Private channels (client/owner/dealer -> node) and node key files: specs/channels.md, specs/keys.md.
CHANNEL_MSG = b"shardproof/channel/msg/v1"  # "tag" field of a sealed channel message (CBOR)
CHANNEL_AD = b"shardproof/channel/ad/v1"  # prefix of the AEAD associated data (header binding)
CHANNEL_KDF = b"shardproof/channel/kdf/v1"  # HKDF-SHA256 salt: (es || ss) -> AEAD key and nonce
NODE_X25519_SEED = b"shardproof/node/x25519-seed/v1"  # key-file seed -> X25519 static private key
NODE_ID = b"shardproof/node/id/v1"  # Ed25519 public key -> default node id
NODE_KEY_FILE = "shardproof/node-key"  # "format" field of a node key file (CBOR)

# --- audit (prover commitments, verifier challenges) ------------------------
STEP_COMMIT_LEAF = b"shardproof/audit/step-leaf/v1"  # salted leaf over one step record of one party
OPENED_LEAF = b"shardproof/audit/opened-leaf/v1"  # unsalted leaf over the public openings of one step
STEP_SALT = b"shardproof/audit/step-salt/v1"  # PRG purpose of a step's salt (node-secret seed)
COMMIT_SECRET = b"shardproof/audit/commit-secret/v1"  # a share index's node secret: dealer seed + share salts
CHALLENGE = b"shardproof/audit/challenge/v2"  # challenge seed: sealing checkpoint, job roots, beacon reveals
CHALLENGE_BEACON = b"shardproof/audit/challenge-beacon/v1"  # a participant's commitment to its beacon value
JOB_ROOT = b"shardproof/audit/job-root/v1"  # BLAKE3(tag || views_root || opened_root): the root a node signs
CORRECTIONS_LEAF = b"shardproof/audit/corrections-leaf/v2"  # leaf of the Merkle tree over the dealer's corrections
BROADCAST_CHAIN = b"shardproof/audit/broadcast-chain/v1"  # hash chain over the messages one party sent one peer
BROADCAST_RECEIPT = b"shardproof/audit/broadcast-receipt/v1"  # Ed25519 statement: "I sent you exactly this chain"
DEALER_CORRECTION_AD = b"shardproof/channel/dealer-correction/v1"  # AD prefix of a sealed correction message
WEIGHT_REFRESH = "shardproof/weights/refresh/v1"  # PRG purpose (ASCII): pairwise per-job weight-share refresh
WEIGHT_REFRESH_SALT = b"shardproof/weights/refresh-salt/v1"  # per-job commitment salt from a node's salt key

# --- verifier -------------------------------------------------------------
FREIVALDS_R = b"shardproof/verifier/freivalds-r/v1"  # PRG purpose (ASCII) of a Freivalds challenge matrix R
FREIVALDS_ALPHA = b"shardproof/verifier/freivalds-alpha/v1"  # PRG purpose (ASCII) of batch-fold coefficients
