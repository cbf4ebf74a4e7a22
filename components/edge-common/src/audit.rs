//! Hash-chained audit records.
//!
//! Each entry's hash is HMAC-SHA256 (under a key derived from the master key)
//! over the previous entry's hash and the entry's canonical encoding, so an
//! edit, deletion, reordering or insertion breaks the chain at that entry and
//! cannot be repaired without the key. A head anchor kept outside the table
//! (the key-value store) detects truncation of the tail.
//!
//! Entries hold ids and codes only, never PHI.

use crate::crypto::SecretKey;
use serde::{Deserialize, Serialize};

/// Hash that precedes the first entry.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// One audit fact: who did what to which resource, with what outcome, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    pub actor_id: String,
    pub role: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// Client (data subject) id the resource belongs to, or empty.
    pub client_id: String,
    pub outcome: String,
    /// Access made under break-glass emergency access.
    pub break_glass: bool,
}

impl AuditRecord {
    fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"audit/v1");
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.at.to_be_bytes());
        for s in [
            &self.actor_id,
            &self.role,
            &self.action,
            &self.resource_type,
            &self.resource_id,
            &self.client_id,
            &self.outcome,
        ] {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.push(self.break_glass as u8);
        out
    }
}

/// The chain link of `record` after the entry whose hash is `prev`.
pub fn chain_hash(key: &SecretKey, prev: &[u8], record: &AuditRecord) -> [u8; 32] {
    let mut data = Vec::with_capacity(200);
    data.extend_from_slice(&(prev.len() as u32).to_be_bytes());
    data.extend_from_slice(prev);
    data.extend_from_slice(&record.canonical());
    key.mac(&data)
}

/// An entry as stored: the record plus its chain link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub record: AuditRecord,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The latest (seq, hash) written, kept outside the audit table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: i64,
    pub hash_hex: String,
}

/// Where the chain starts: seq 1 after genesis, or later after retention pruning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStart {
    pub first_seq: i64,
    pub prev_hash: Vec<u8>,
}

impl Default for ChainStart {
    fn default() -> Self {
        ChainStart { first_seq: 1, prev_hash: GENESIS.to_vec() }
    }
}

/// The first entry found broken, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub entries_checked: u64,
    pub first_broken: Option<Broken>,
}

/// Incremental verifier: feed entries in stored order, then [`Verifier::finish`].
pub struct Verifier<'k> {
    key: &'k SecretKey,
    expected_seq: i64,
    prev: Vec<u8>,
    checked: u64,
    broken: Option<Broken>,
    anchor: Option<Anchor>,
    anchor_matched: bool,
}

impl<'k> Verifier<'k> {
    pub fn new(key: &'k SecretKey, start: ChainStart, anchor: Option<Anchor>) -> Self {
        Verifier {
            key,
            expected_seq: start.first_seq,
            prev: start.prev_hash,
            checked: 0,
            broken: None,
            anchor,
            anchor_matched: false,
        }
    }

    /// Whether a break has been found (later entries need not be fed).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// A stored row that cannot even be decoded (a column of the wrong type).
    pub fn malformed(&mut self, seq: Option<i64>) {
        if self.broken.is_none() {
            let seq = seq.unwrap_or(self.expected_seq);
            self.broken = Some(Broken { seq, reason: "entry is malformed (a column has the wrong type)".into() });
        }
    }

    pub fn feed(&mut self, entry: &StoredEntry) {
        if self.broken.is_some() {
            return;
        }
        let seq = entry.record.seq;
        let fail = |reason: String| Some(Broken { seq, reason });
        if seq != self.expected_seq {
            let reason = if seq > self.expected_seq {
                format!("entry {} is missing (next stored entry is {})", self.expected_seq, seq)
            } else {
                format!("entry {} is out of order (expected {})", seq, self.expected_seq)
            };
            self.broken = Some(Broken { seq: self.expected_seq, reason });
            return;
        }
        if entry.prev_hash != self.prev {
            self.broken = fail("link to the previous entry does not match".into());
            return;
        }
        let expected = chain_hash(self.key, &self.prev, &entry.record);
        if entry.hash.as_slice() != expected {
            self.broken = fail("entry content does not match its hash".into());
            return;
        }
        if let Some(a) = &self.anchor {
            if a.seq == seq {
                if a.hash_hex != hex::encode(expected) {
                    self.broken = fail("entry differs from the recorded chain head".into());
                    return;
                }
                self.anchor_matched = true;
            }
        }
        self.checked += 1;
        self.prev = entry.hash.clone();
        self.expected_seq += 1;
    }

    pub fn finish(mut self) -> Verification {
        if self.broken.is_none() {
            if let Some(a) = &self.anchor {
                if a.seq >= self.expected_seq && !self.anchor_matched {
                    self.broken = Some(Broken {
                        seq: self.expected_seq,
                        reason: format!(
                            "entries from {} are missing: the recorded chain head is entry {}",
                            self.expected_seq, a.seq
                        ),
                    });
                }
            }
        }
        Verification { ok: self.broken.is_none(), entries_checked: self.checked, first_broken: self.broken }
    }
}

/// Verifies a whole chain held in memory.
pub fn verify(key: &SecretKey, start: ChainStart, entries: &[StoredEntry], anchor: Option<Anchor>) -> Verification {
    let mut v = Verifier::new(key, start, anchor);
    for e in entries {
        v.feed(e);
        if v.is_broken() {
            break;
        }
    }
    v.finish()
}

/// Builds the next stored entry after `prev_hash`.
pub fn link(key: &SecretKey, prev_hash: &[u8], record: AuditRecord) -> StoredEntry {
    let hash = chain_hash(key, prev_hash, &record).to_vec();
    StoredEntry { record, prev_hash: prev_hash.to_vec(), hash }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64) -> AuditRecord {
        AuditRecord {
            seq,
            at: 1_700_000_000 + seq,
            actor_id: format!("u{}", seq % 3),
            role: "therapist".into(),
            action: "read".into(),
            resource_type: "client".into(),
            resource_id: "c1".into(),
            client_id: "c1".into(),
            outcome: "success".into(),
            break_glass: false,
        }
    }

    fn chain(key: &SecretKey, n: i64) -> Vec<StoredEntry> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|s| {
                let e = link(key, &prev, record(s));
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn anchor_of(entries: &[StoredEntry]) -> Option<Anchor> {
        entries.last().map(|e| Anchor { seq: e.record.seq, hash_hex: hex::encode(&e.hash) })
    }

    #[test]
    fn intact_chain_verifies() {
        let k = SecretKey::generate().unwrap();
        let c = chain(&k, 10);
        let v = verify(&k, ChainStart::default(), &c, anchor_of(&c));
        assert!(v.ok, "{v:?}");
        assert_eq!(v.entries_checked, 10);
        assert!(verify(&k, ChainStart::default(), &[], None).ok);
    }

    #[test]
    fn edited_field_is_found_at_its_entry() {
        let k = SecretKey::generate().unwrap();
        let mut c = chain(&k, 10);
        let a = anchor_of(&c);
        c[4].record.outcome = "denied".into();
        let v = verify(&k, ChainStart::default(), &c, a);
        assert_eq!(v.first_broken.unwrap().seq, 5);
    }

    #[test]
    fn flipped_hash_byte_is_found() {
        let k = SecretKey::generate().unwrap();
        let mut c = chain(&k, 6);
        let a = anchor_of(&c);
        c[2].hash[0] ^= 0x01;
        assert_eq!(verify(&k, ChainStart::default(), &c, a).first_broken.unwrap().seq, 3);
    }

    #[test]
    fn deletion_is_found_at_the_gap() {
        let k = SecretKey::generate().unwrap();
        let mut c = chain(&k, 8);
        let a = anchor_of(&c);
        c.remove(3);
        let v = verify(&k, ChainStart::default(), &c, a);
        assert_eq!(v.first_broken.unwrap().seq, 4);
    }

    #[test]
    fn reordering_is_found() {
        let k = SecretKey::generate().unwrap();
        let mut c = chain(&k, 8);
        let a = anchor_of(&c);
        // Swap contents of entries 3 and 4 but keep the seq column in place.
        let (s3, s4) = (c[2].record.seq, c[3].record.seq);
        c.swap(2, 3);
        c[2].record.seq = s3;
        c[3].record.seq = s4;
        assert_eq!(verify(&k, ChainStart::default(), &c, a).first_broken.unwrap().seq, 3);
    }

    #[test]
    fn truncation_is_found_through_the_anchor() {
        let k = SecretKey::generate().unwrap();
        let mut c = chain(&k, 8);
        let a = anchor_of(&c);
        c.truncate(5);
        let v = verify(&k, ChainStart::default(), &c, a);
        assert_eq!(v.first_broken.unwrap().seq, 6);
        // Without an anchor a truncated chain looks intact: the anchor is what catches it.
        assert!(verify(&k, ChainStart::default(), &c, None).ok);
    }

    #[test]
    fn anchor_behind_the_tail_is_fine() {
        let k = SecretKey::generate().unwrap();
        let c = chain(&k, 8);
        let a = anchor_of(&c[..5]);
        assert!(verify(&k, ChainStart::default(), &c, a).ok);
    }

    #[test]
    fn forged_chain_without_key_fails() {
        let k = SecretKey::generate().unwrap();
        let forger = SecretKey::generate().unwrap();
        let c = chain(&forger, 3);
        assert_eq!(verify(&k, ChainStart::default(), &c, None).first_broken.unwrap().seq, 1);
    }

    #[test]
    fn malformed_rows_are_breaks() {
        let k = SecretKey::generate().unwrap();
        let c = chain(&k, 3);
        let mut v = Verifier::new(&k, ChainStart::default(), None);
        v.feed(&c[0]);
        v.malformed(Some(2));
        v.feed(&c[2]);
        assert_eq!(v.finish().first_broken.unwrap().seq, 2);
    }

    #[test]
    fn chain_can_start_after_pruning() {
        let k = SecretKey::generate().unwrap();
        let c = chain(&k, 8);
        let start = ChainStart { first_seq: 4, prev_hash: c[2].hash.clone() };
        assert!(verify(&k, start, &c[3..], anchor_of(&c)).ok);
    }
}
