//! A Rekor-like transparency log: an RFC 6962 Merkle tree of canonicalized entry bodies, a signed entry
//! timestamp (inclusion promise) per entry, and inclusion proofs against a signed checkpoint (a signed note).

use std::sync::Mutex;

use base64::Engine as _;
use sha2::Digest as _;

use super::x509::Key;

/// One logged entry, with everything a bundle carries about it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Its index in the log.
    pub index: u64,
    /// When the log integrated it (seconds since the epoch).
    pub integrated_time: u64,
    /// The canonicalized body (JSON).
    pub body: Vec<u8>,
    /// The log's ID: SHA-256 of its key's SPKI.
    pub log_id: [u8; 32],
    /// The signed entry timestamp: the log's signature over the canonical JSON of body, time, index and ID.
    pub set: Vec<u8>,
    /// The inclusion proof at the time of logging.
    pub proof: InclusionProof,
}

/// An inclusion proof and the checkpoint it leads to.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The root hash.
    pub root: [u8; 32],
    /// The audit path, leaf to root.
    pub hashes: Vec<[u8; 32]>,
    /// The signed checkpoint (a signed note naming the size and root).
    pub checkpoint: String,
}

/// The log.
#[derive(Debug)]
pub struct Rekor {
    /// Its key.
    pub key: Key,
    origin: String,
    leaves: Mutex<Vec<[u8; 32]>>,
}

/// RFC 6962 leaf hash.
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH(D[n]) of RFC 6962 §2.1.
pub fn root_hash(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => sha2::Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root_hash(&leaves[..k]), &root_hash(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]) of RFC 6962 §2.1.1.
pub fn audit_path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = audit_path(m, &leaves[..k]);
        p.push(root_hash(&leaves[k..]));
        p
    } else {
        let mut p = audit_path(m - k, &leaves[k..]);
        p.push(root_hash(&leaves[..k]));
        p
    }
}

impl Rekor {
    /// A log with a fresh key, already holding `filler` unrelated entries (so proofs have a real path).
    pub fn new(filler: usize) -> Rekor {
        let key = Key::generate();
        let tree_id = u64::from_be_bytes(key.key_id()[..8].try_into().unwrap()) >> 1;
        let leaves = (0..filler)
            .map(|i| leaf_hash(format!("{{\"filler\":{i}}}").as_bytes()))
            .collect();
        Rekor {
            key,
            origin: format!("rekor.sigstore.test - {tree_id}"),
            leaves: Mutex::new(leaves),
        }
    }

    /// Appends `body` (integrated at `time`) and returns the entry with its SET and inclusion proof.
    pub fn append(&self, body: Vec<u8>, time: u64) -> LogEntry {
        let mut leaves = self.leaves.lock().unwrap();
        leaves.push(leaf_hash(&body));
        let index = leaves.len() - 1;
        let b64 = base64::engine::general_purpose::STANDARD;
        let log_id = self.key.key_id();
        // The SET payload, in RFC 8785 canonical form (keys sorted; no escapes occur in these values).
        let payload = format!(
            "{{\"body\":\"{}\",\"integratedTime\":{time},\"logID\":\"{}\",\"logIndex\":{index}}}",
            b64.encode(&body),
            hex::encode(log_id)
        );
        let set = self.key.sign(payload.as_bytes());
        let root = root_hash(&leaves);
        let hashes = audit_path(index, &leaves);
        let tree_size = leaves.len() as u64;
        let checkpoint = self.checkpoint(tree_size, &root);
        LogEntry {
            index: index as u64,
            integrated_time: time,
            body,
            log_id,
            set,
            proof: InclusionProof {
                tree_size,
                root,
                hashes,
                checkpoint,
            },
        }
    }

    /// A signed note: `origin\nsize\nroot\n`, a blank line, and `— name base64(key hint ‖ signature)`.
    fn checkpoint(&self, size: u64, root: &[u8; 32]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = format!("{}\n{size}\n{}\n", self.origin, b64.encode(root));
        let mut sig = self.key.key_id()[..4].to_vec();
        sig.extend_from_slice(&self.key.sign(body.as_bytes()));
        let name = self.origin.split(' ').next().unwrap_or("rekor");
        format!("{body}\n\u{2014} {name} {}\n", b64.encode(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent check of the proofs: recompute the root from leaf and path (RFC 9162 §2.1.3.2).
    fn root_from_path(index: u64, size: u64, leaf: [u8; 32], path: &[[u8; 32]]) -> [u8; 32] {
        let (mut fnode, mut snode) = (index, size - 1);
        let mut r = leaf;
        for p in path {
            if fnode & 1 == 1 || fnode == snode {
                r = node_hash(p, &r);
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            } else {
                r = node_hash(&r, p);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        r
    }

    #[test]
    fn every_leaf_of_trees_of_many_sizes_proves_its_inclusion() {
        for n in 1..=13usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let root = root_hash(&leaves);
            for m in 0..n {
                let path = audit_path(m, &leaves);
                assert_eq!(
                    root_from_path(m as u64, n as u64, leaves[m], &path),
                    root,
                    "n={n} m={m}"
                );
                // A path for another leaf does not prove this one.
                if n > 1 {
                    let other = (m + 1) % n;
                    assert_ne!(
                        root_from_path(m as u64, n as u64, leaves[other], &path),
                        root
                    );
                }
            }
        }
    }
}
