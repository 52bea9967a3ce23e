//! Record signature checks. Ed25519 signatures are checked by ZIP-215's rules
//! (`ed25519-zebra`), one at a time or in batches: under ZIP-215 a batch accepts exactly
//! what checking each alone accepts, so whether a node batched, and how, never changes
//! which records it takes. (RFC 8032 checks, aws-lc's among them, leave that open for
//! crafted signatures: a batch and single checks could disagree, and nodes with it.)
//! Other key types are checked one at a time by aws-lc.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes, batch};

use crate::pki::{Cert, KeyType};

/// One signature to check: the signer's key type and public key, what was signed, and
/// the signature.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The key's type.
    pub key_type: KeyType,
    /// The public key (raw for Ed25519, as in the certificate).
    pub key: &'a [u8],
    /// What was signed.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a [u8],
}

impl<'a> Check<'a> {
    /// `signature` over `message` by the key of `cert`.
    pub fn by(cert: &'a Cert, message: &'a [u8], signature: &'a [u8]) -> Check<'a> {
        Check {
            key_type: cert.key_type,
            key: &cert.public_key,
            message,
            signature,
        }
    }

    /// Whether it verifies.
    pub fn verify(&self) -> bool {
        match self.key_type {
            KeyType::Ed25519 => self.ed25519_alone(),
            other => other
                .verify_algorithm()
                .verify_signature(self.key, self.message, self.signature)
                .is_ok(),
        }
    }

    /// An Ed25519 check alone, with the key decoded once per key (see [`KEYS`]).
    fn ed25519_alone(&self) -> bool {
        let (Ok(key), Ok(sig)) = (<[u8; 32]>::try_from(self.key), <[u8; 64]>::try_from(self.signature)) else {
            return false;
        };
        let cached = KEYS.lock().ok().and_then(|k| k.get(&key).copied());
        let vk = match cached {
            Some(vk) => vk,
            None => {
                let Ok(vk) = VerificationKey::try_from(key) else {
                    return false;
                };
                if let Ok(mut keys) = KEYS.lock() {
                    if keys.len() >= KEYS_CAP {
                        keys.clear();
                    }
                    keys.insert(key, vk);
                }
                vk
            }
        };
        vk.verify(&Signature::from(sig), self.message).is_ok()
    }

    /// The batch item of an Ed25519 check whose key and signature have the right
    /// lengths (others fail as they stand).
    fn ed25519(&self) -> Option<batch::Item> {
        let key: [u8; 32] = self.key.try_into().ok()?;
        let sig: [u8; 64] = self.signature.try_into().ok()?;
        Some(batch::Item::from((
            VerificationKeyBytes::from(key),
            Signature::from(sig),
            self.message,
        )))
    }
}

/// Ed25519 keys decoded (a point decompression: a square root, about a fifth of a
/// check alone); a group has few keys. Emptied when full.
static KEYS: std::sync::LazyLock<Mutex<HashMap<[u8; 32], VerificationKey>>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));
/// Most keys [`KEYS`] holds.
const KEYS_CAP: usize = 16_384;

/// Whether `signature` over `message` verifies with `cert`'s key.
pub fn verify(cert: &Cert, message: &[u8], signature: &[u8]) -> bool {
    Check::by(cert, message, signature).verify()
}

/// Whether each check verifies, by position: the Ed25519 ones in one batch (bisected
/// when it fails, to find which), the others one at a time. The same answers as
/// [`Check::verify`] on each, in less time when many are Ed25519.
pub fn verify_all(checks: &[Check<'_>]) -> Vec<bool> {
    let mut out = vec![false; checks.len()];
    let mut ed25519 = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        if c.key_type != KeyType::Ed25519 {
            out[i] = c.verify();
        } else if let Some(item) = c.ed25519() {
            ed25519.push((i, c, item));
        }
    }
    settle(&ed25519, &mut out);
    out
}

/// Checks `items` as one batch; when it fails, each half again, down to single
/// checks: one bad signature among n costs about 2 log2(n) batches more, not n singles.
fn settle(items: &[(usize, &Check<'_>, batch::Item)], out: &mut [bool]) {
    match items {
        [] => {}
        [(i, check, _)] => out[*i] = check.ed25519_alone(),
        _ => {
            let mut b = batch::Verifier::new();
            for (_, _, item) in items {
                b.queue(item.clone());
            }
            if b.verify(rand_core::OsRng).is_ok() {
                for (i, _, _) in items {
                    out[*i] = true;
                }
            } else {
                let (left, right) = items.split_at(items.len() / 2);
                settle(left, out);
                settle(right, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::CompressedEdwardsY;

    /// ZIP-215's small-order cases (as ed25519-zebra's own tests make them): every
    /// canonical encoding of the 8 torsion points and the 6 low-order non-canonical
    /// encodings, as key A and as R, with s = 0, over the message "Zcash": 196
    /// signatures, each valid under ZIP-215 ([8][s]B = [8]R + [8][k]A holds with every
    /// term 0), most of them invalid under RFC 8032.
    fn small_order_cases() -> Vec<([u8; 32], [u8; 64])> {
        let mut encodings: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|p| p.compress().to_bytes()).collect();
        // The non-canonical low-order ones: y = 1 and y = -1 with the sign bit set, then
        // y + p for the field elements that have such an encoding, either sign.
        let mut y1 = [0u8; 32];
        y1[0] = 1;
        y1[31] = 128;
        let mut ym1 = [255u8; 32];
        ym1[0] = 236;
        let mut low = vec![y1, ym1];
        for i in 0..19u8 {
            let mut x = [255u8; 32];
            x[0] = 237 + i;
            x[31] = 127;
            for sign in [0u8, 128] {
                let mut e = x;
                e[31] |= sign;
                if let Some(p) = CompressedEdwardsY(e).decompress()
                    && p.is_small_order()
                {
                    low.push(e);
                }
            }
        }
        assert_eq!(low.len(), 6, "ZIP-215 names 6 low-order non-canonical encodings");
        encodings.extend(low);
        let mut cases = Vec::new();
        for a in &encodings {
            for r in &encodings {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(r);
                cases.push((*a, sig));
            }
        }
        cases
    }

    fn check<'a>(key: &'a [u8], signature: &'a [u8]) -> Check<'a> {
        Check {
            key_type: KeyType::Ed25519,
            key,
            message: b"Zcash",
            signature,
        }
    }

    #[test]
    fn zip215_small_order_vectors_pass_alone_and_in_any_batch_and_rfc8032_disagrees() {
        let cases = small_order_cases();
        assert_eq!(cases.len(), 196);
        let checks: Vec<Check<'_>> = cases.iter().map(|(a, s)| check(a, s)).collect();
        assert!(checks.iter().all(Check::verify), "single checks");
        assert!(verify_all(&checks).into_iter().all(|ok| ok), "one batch");
        for size in [2, 7, 64] {
            for part in checks.chunks(size) {
                assert!(verify_all(part).into_iter().all(|ok| ok), "batches of {size}");
            }
        }
        // What aws-lc (RFC 8032) makes of them: why it never checks a record.
        let rfc8032 = checks
            .iter()
            .filter(|c| {
                KeyType::Ed25519
                    .verify_algorithm()
                    .verify_signature(c.key, c.message, c.signature)
                    .is_ok()
            })
            .count();
        assert!(rfc8032 < cases.len(), "aws-lc accepts {rfc8032} of 196");
    }

    /// With a key of small order, a signature (small-order R, s = 0) verifies for any
    /// message under ZIP-215: such keys are refused in certificates.
    #[test]
    fn keys_of_small_order_are_refused_in_certificates() {
        for (key, sig) in small_order_cases().iter().step_by(15) {
            assert!(!crate::pki::ed25519_key_is_sound(key), "{key:?}");
            let mut forged = check(key, sig);
            forged.message = b"anything at all";
            assert!(forged.verify(), "why: it verifies for any message");
        }
        let real = ed25519_zebra::SigningKey::from([7u8; 32]);
        let real: [u8; 32] = VerificationKeyBytes::from(VerificationKey::from(&real)).into();
        assert!(crate::pki::ed25519_key_is_sound(&real));
        assert!(!crate::pki::ed25519_key_is_sound(&real[..31]));
    }

    #[test]
    fn a_bad_signature_in_a_batch_is_found_and_only_it_fails() {
        let keys: Vec<ed25519_zebra::SigningKey> = (0..40u8)
            .map(|i| ed25519_zebra::SigningKey::from([i.wrapping_add(1); 32]))
            .collect();
        let messages: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100]).collect();
        let mut sigs: Vec<[u8; 64]> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m).to_bytes()).collect();
        let vks: Vec<[u8; 32]> = keys
            .iter()
            .map(|k| VerificationKeyBytes::from(VerificationKey::from(k)).into())
            .collect();
        for bad in [0usize, 17, 39] {
            sigs[bad][40] ^= 1;
        }
        let short = [0u8; 10];
        let mut checks: Vec<Check<'_>> = (0..40)
            .map(|i| Check {
                key_type: KeyType::Ed25519,
                key: &vks[i],
                message: &messages[i],
                signature: &sigs[i],
            })
            .collect();
        checks.push(check(&vks[1], &short));
        let got = verify_all(&checks);
        let want: Vec<bool> = (0..41).map(|i| ![0, 17, 39, 40].contains(&i)).collect();
        assert_eq!(got, want);
        let single: Vec<bool> = checks.iter().map(Check::verify).collect();
        assert_eq!(single, want, "the same as one at a time");
    }
}
